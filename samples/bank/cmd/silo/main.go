// Command silo hosts the bank sample's Account grains: one silo of a
// Granary cluster, configured by flags or the GRANARY_* environment.
//
//	silo -etcd http://127.0.0.1:2379 -cluster bank -silo-id silo-1 -listen 127.0.0.1:0
//
// It prints one line, "READY <silo-id> <address>", on stdout once it serves
// calls, and stops gracefully on SIGINT or SIGTERM: it deactivates its
// accounts, writes their state and leaves the cluster, then exits 0. With no
// etcd endpoints it starts an embedded etcd, which is only useful for a
// single silo. `make demo` starts three of these. For TLS (mutual TLS
// between silos, TLS to clients and etcd) give -tls-cert, -tls-key,
// -tls-ca (the cluster's CA, silos only) and -tls-client-ca (the clients'
// CA), and -etcd-tls-* for etcd; see the README's TLS section.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/samples/bank"
)

// Bounds on starting (connecting to etcd, joining) and on graceful stop.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

func main() { os.Exit(run()) }

func run() int {
	var cfg runtime.Config
	cfg.BindFlags(flag.CommandLine)
	verbose := flag.Bool("v", false, "write development logs to stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n\nHosts the bank sample's Account grains. Flags:\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	if *verbose {
		log, err := zap.NewDevelopment()
		if err != nil {
			fmt.Fprintln(os.Stderr, "silo:", err)
			return 1
		}
		defer func() { _ = log.Sync() }()
		cfg.Logger = log
	}
	if len(cfg.Etcd.Endpoints) == 0 {
		fmt.Fprintf(os.Stderr, "silo: no etcd endpoints (-etcd or %s): starting an embedded etcd; other processes cannot join this cluster\n",
			runtime.EnvEtcdEndpoints)
	}

	silo, err := runtime.NewSilo(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "silo:", err)
		return 1
	}
	bank.RegisterAccount(silo, bank.NewAccount)

	// A signal while starting aborts the start; after it, it starts the
	// graceful stop.
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	err = silo.Start(startCtx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "silo:", err)
		return 1
	}
	fmt.Printf("READY %s %s\n", silo.ID(), silo.Address())

	<-ctx.Done()
	stopSignals() // a second signal kills the process the default way
	fmt.Fprintf(os.Stderr, "silo %s: stopping: deactivating grains and writing their state\n", silo.ID())
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := silo.Stop(stopCtx); err != nil {
		fmt.Fprintf(os.Stderr, "silo %s: stop: %v\n", silo.ID(), err)
		return 1
	}
	return 0
}
