// Command hello runs the hello sample: one silo on an embedded etcd and a
// greeter grain.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/granary-rt/granary/samples/hello"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := hello.Run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}
