// Package etcdembedtest runs a test binary against an embedded etcd server
// that TestMain starts once for the whole package:
//
//	var endpoints []string
//
//	func TestMain(m *testing.M) {
//		os.Exit(etcdembedtest.Main(m, &endpoints))
//	}
//
// After the tests, it stops the server and, if they passed, fails the run
// when goroutines leaked (go.uber.org/goleak).
package etcdembedtest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime/etcdembed"
)

var prefixes atomic.Int64

// UniquePrefix returns an etcd key prefix no other caller in this process
// got: one per test or subtest, on a server they share.
func UniquePrefix() string {
	return fmt.Sprintf("/granary-test/%d/", prefixes.Add(1))
}

// startTimeout bounds how long the embedded server may take to start.
const startTimeout = 30 * time.Second

// Main starts an embedded etcd server, stores its client endpoints in
// *endpoints, runs the tests, stops the server and, if the tests passed,
// looks for leaked goroutines with goleak.Find(opts...). Problems are
// printed to stderr. It returns the exit code to pass to os.Exit.
func Main(m *testing.M, endpoints *[]string, opts ...goleak.Option) int {
	return Run(m.Run, endpoints, opts...)
}

// MainWithClient is Main for a package whose tests share one etcd
// client: it sets *cli to a client of the server (no logs) for the tests
// and closes it after them, before the server stops.
func MainWithClient(m *testing.M, cli **clientv3.Client, opts ...goleak.Option) int {
	var endpoints []string
	return Run(func() int {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcdembedtest: etcd client:", err)
			return 1
		}
		defer c.Close()
		*cli = c
		return m.Run()
	}, &endpoints, opts...)
}

// Run is Main with the tests given as a function, for a package that must
// do more around them than Main does. run is called after *endpoints is set
// and before the server stops, so it may connect a client to the server,
// as long as it closes the client before it returns.
func Run(run func() int, endpoints *[]string, opts ...goleak.Option) int {
	return runWith(etcdembed.Config{StartTimeout: startTimeout}, run, endpoints, opts...)
}

// runWith is Run with the server's configuration given.
func runWith(cfg etcdembed.Config, run func() int, endpoints *[]string, opts ...goleak.Option) int {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = startTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	srv, err := etcdembed.Start(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdembedtest: start embedded etcd:", err)
		return 1
	}
	*endpoints = srv.Endpoints()
	code := run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdembedtest: close embedded etcd:", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
