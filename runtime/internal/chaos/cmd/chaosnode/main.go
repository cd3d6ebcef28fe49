// Command chaosnode is a process of the fault-injection test in
// runtime/internal/chaos: an etcd server or a silo hosting the Register
// grain. The test builds it without the race detector and starts, kills,
// freezes and restarts it.
//
//	chaosnode etcd -dir DIR -addr HOST:PORT
//	chaosnode silo [-log FILE] [-write-through] [-postgres DSN] [runtime flags: -etcd, -cluster, -silo-id, -listen, -lease-ttl ...]
//
// Once serving it prints one line on stdout, "READY <endpoint>" (etcd) or
// "READY <silo-id> <address>" (silo), and it stops gracefully when stdin
// closes (the test ended or died) or on SIGTERM/SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed"
	"github.com/granary-rt/granary/runtime/internal/chaos"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chaosnode etcd|silo [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("chaosnode "+os.Args[1], flag.ContinueOnError)
	switch os.Args[1] {
	case "etcd":
		os.Exit(runEtcd(fs, os.Args[2:]))
	case "silo":
		os.Exit(runSilo(fs, os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "chaosnode: unknown role %q (want etcd or silo)\n", os.Args[1])
		os.Exit(2)
	}
}

// stopRequested is closed when stdin reaches EOF or on SIGTERM/SIGINT.
func stopRequested() <-chan struct{} {
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	go func() {
		select {
		case <-sig:
		case <-eof:
		}
		close(stop)
	}()
	return stop
}

func logger(path string) (*zap.Logger, error) {
	if path == "" {
		return zap.NewNop(), nil
	}
	cfg := zap.NewProductionConfig()
	cfg.OutputPaths = []string{path}
	cfg.ErrorOutputPaths = []string{path}
	cfg.Sampling = nil
	return cfg.Build()
}

func runEtcd(fs *flag.FlagSet, args []string) int {
	dir := fs.String("dir", "", "data directory (kept across restarts)")
	addr := fs.String("addr", "", "client address host:port")
	logPath := fs.String("log", "", "append logs to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := logger(*logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode etcd:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: *dir, ClientAddr: *addr, Logger: log})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode etcd:", err)
		return 1
	}
	// Stdout is the protocol with the test, not a log.
	fmt.Fprintln(os.Stdout, "READY", strings.Join(srv.Endpoints(), ","))
	<-stopRequested()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode etcd: close:", err)
		return 1
	}
	return 0
}

func runSilo(fs *flag.FlagSet, args []string) int {
	var cfg runtime.Config
	cfg.BindFlags(fs)
	logPath := fs.String("log", "", "append logs to this file")
	writeThrough := fs.Bool("write-through", false, "Register's state uses the write-through policy instead of explicit writes")
	pgDSN := fs.String("postgres", "", "store grain state in PostgreSQL at this DSN instead of etcd")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := logger(*logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode silo:", err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	cfg.Logger = log
	if *pgDSN != "" {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		p, err := postgres.New(ctx, postgres.Config{DSN: *pgDSN, Logger: log})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaosnode silo:", err)
			return 1
		}
		defer p.Close()
		cfg.Storage = map[string]storage.Provider{runtime.DefaultStorage: p}
	}
	s, err := runtime.NewSilo(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode silo:", err)
		return 1
	}
	// Prefer-local placement: a grain first called through a silo's
	// gateway lives there, so the test knows which silo hosts what.
	chaos.RegisterRegister(s, chaos.NewRegister(cfg.SiloID, *writeThrough), grain.WithPlacement(grain.PlacePreferLocal))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	err = s.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode silo:", err)
		return 1
	}
	fmt.Fprintln(os.Stdout, "READY", s.ID(), s.Address())
	<-stopRequested()
	ctx, cancel = context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "chaosnode silo: stop:", err)
		return 1
	}
	return 0
}
