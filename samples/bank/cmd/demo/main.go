// Command demo runs the bank sample on an embedded etcd with two silos and
// prints what happens. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/samples/bank"
)

func main() {
	verbose := flag.Bool("v", false, "log what the silos do")
	flag.Parse()
	log := zap.NewNop()
	if *verbose {
		log, _ = zap.NewDevelopment()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := bank.Demo(ctx, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
