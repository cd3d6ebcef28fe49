// Command web is the bank sample's HTTP frontend: a separate process that
// connects to a Granary cluster as a client and serves the JSON API of
// package web, sending each call straight to the silo hosting the account.
//
//	web -http 127.0.0.1:8080 -etcd http://127.0.0.1:2379 -cluster bank
//
// The etcd endpoints and cluster default to GRANARY_ETCD_ENDPOINTS and
// GRANARY_CLUSTER. It prints one line, "READY <host:port>", on stdout once
// it listens (so -http 127.0.0.1:0 works), and shuts down gracefully on
// SIGINT or SIGTERM: it finishes the requests in flight, then closes its
// cluster client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/samples/web"
)

const (
	connectTimeout  = 30 * time.Second
	shutdownTimeout = 10 * time.Second
)

func main() { os.Exit(run()) }

func run() int {
	httpAddr := flag.String("http", "127.0.0.1:8080", "HTTP listen address (port 0: a free port)")
	etcd := flag.String("etcd", os.Getenv(runtime.EnvEtcdEndpoints),
		"etcd endpoints of the cluster, comma-separated (env "+runtime.EnvEtcdEndpoints+")")
	cluster := flag.String("cluster", envOr(runtime.EnvCluster, runtime.DefaultCluster),
		"cluster name (env "+runtime.EnvCluster+")")
	verbose := flag.Bool("v", false, "write development logs to stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n\nServes the bank sample's HTTP API. Flags:\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	var endpoints []string
	for _, e := range strings.Split(*etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	if len(endpoints) == 0 {
		fmt.Fprintf(os.Stderr, "web: no etcd endpoints: give -etcd or %s\n", runtime.EnvEtcdEndpoints)
		return 2
	}
	log := zap.NewNop()
	if *verbose {
		var err error
		if log, err = zap.NewDevelopment(); err != nil {
			fmt.Fprintln(os.Stderr, "web:", err)
			return 1
		}
		defer func() { _ = log.Sync() }()
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	connectCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	client, err := runtime.Connect(connectCtx, runtime.ClientConfig{
		Cluster: *cluster,
		Etcd:    runtime.EtcdConfig{Endpoints: endpoints},
		Logger:  log,
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		return 1
	}
	defer client.Close()

	lis, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		return 1
	}
	srv := &http.Server{
		Handler:           web.NewHandler(client),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	fmt.Printf("READY %s\n", lis.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		fmt.Fprintln(os.Stderr, "web: serve:", err)
		return 1
	}
	stopSignals() // a second signal kills the process the default way
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	code := 0
	if err := srv.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintln(os.Stderr, "web: shutdown:", err)
		code = 1
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "web: serve:", err)
		code = 1
	}
	if err := client.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "web: close cluster client:", err)
		code = 1
	}
	return code
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
