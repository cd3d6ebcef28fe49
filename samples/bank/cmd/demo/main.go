// Command demo runs the bank sample on a real multi-process cluster and
// says what happens: an embedded etcd in this process, three silo processes
// (bin/silo) and an HTTP frontend process (bin/web); it kills one silo with
// SIGKILL and shows its accounts coming back on the others. `make demo`
// builds the three commands and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/samples/bank"
)

func main() {
	silo := flag.String("silo", "bin/silo", "path of the silo command (go build -o bin/silo ./samples/bank/cmd/silo)")
	web := flag.String("web", "bin/web", "path of the web command (go build -o bin/web ./samples/web/cmd/web)")
	silos := flag.Int("silos", 3, "number of silo processes")
	verbose := flag.Bool("v", false, "show the logs of etcd and of the child processes on stderr")
	flag.Parse()
	opts := bank.DemoOptions{SiloBin: *silo, WebBin: *web, Silos: *silos, SysProcAttr: sysProcAttr()}
	if *verbose {
		log, err := zap.NewDevelopment()
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		opts.Logger, opts.Verbose, opts.ChildOutput = log, true, os.Stderr
	}
	for _, bin := range []string{opts.SiloBin, opts.WebBin} {
		if _, err := os.Stat(bin); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\nbuild the commands first, or run `make demo`\n", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bank.Demo(ctx, os.Stdout, opts); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "\ndemo interrupted; its processes were killed")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}
