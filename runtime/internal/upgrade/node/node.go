// Package node is the process of the rolling-upgrade test
// (runtime/internal/upgrade): a silo hosting one version of the Journal,
// or a client of one version calling it continuously. cmd/journalv1 and
// cmd/journalv2 are this program built against either version.
//
//	journalvN silo [runtime flags: -etcd, -cluster, -silo-id, -listen, -lease-ttl ...]
//	journalvN client -etcd ENDPOINTS -cluster NAME -name NAME [-grains N] [-workers N]
//
// A silo prints "READY <silo-id> <address>" once serving; a client prints
// "READY" once connected, then one JSON Result per call on stdout. Both
// stop gracefully when stdin closes (a client then prints "DONE").
package node

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
)

// Result is the outcome of one call, as a client saw it.
type Result struct {
	Call    string `json:"call"`
	Key     string `json:"key"`
	Method  string `json:"method"` // wire name called
	Client  string `json:"client"` // version of the client
	Code    string `json:"code,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Err     string `json:"err,omitempty"`
	// What the grain said ran, for a call that succeeded.
	RanMethod  string `json:"ran_method,omitempty"`
	RanVersion string `json:"ran_version,omitempty"`
	RanSilo    string `json:"ran_silo,omitempty"`
}

// Ack is what a method reports about the call it served.
type Ack struct{ Method, Version, Silo string }

// Method is one method a client calls.
type Method struct {
	Name string // wire name
	Call func(ctx context.Context, c grain.Caller, key, call string) (Ack, error)
}

// Main runs the process for one version of the Journal.
func Main(version string, register func(s *runtime.Silo, siloID string), methods []Method) {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: journal"+version+" silo|client [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ContinueOnError)
	switch os.Args[1] {
	case "silo":
		os.Exit(runSilo(fs, os.Args[2:], register))
	case "client":
		os.Exit(runClient(fs, os.Args[2:], version, methods))
	}
	fmt.Fprintf(os.Stderr, "journal%s: unknown role %q\n", version, os.Args[1])
	os.Exit(2)
}

// stopRequested is closed when stdin reaches EOF.
func stopRequested() <-chan struct{} {
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	return stop
}

func runSilo(fs *flag.FlagSet, args []string, register func(*runtime.Silo, string)) int {
	var cfg runtime.Config
	cfg.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Logger = zap.NewNop()
	s, err := runtime.NewSilo(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "silo:", err)
		return 1
	}
	register(s, cfg.SiloID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = s.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "silo:", err)
		return 1
	}
	// Stdout is the protocol with the test, not a log.
	fmt.Fprintln(os.Stdout, "READY", s.ID(), s.Address())
	<-stopRequested()
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "silo: stop:", err)
		return 1
	}
	return 0
}

func runClient(fs *flag.FlagSet, args []string, version string, methods []Method) int {
	etcd := fs.String("etcd", "", "etcd endpoints, comma-separated")
	cluster := fs.String("cluster", "", "cluster name")
	name := fs.String("name", "client", "prefix of call ids")
	grains := fs.Int("grains", 8, "number of grains called")
	workers := fs.Int("workers", 3, "concurrent callers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: *cluster, Etcd: runtime.EtcdConfig{Endpoints: strings.Split(*etcd, ",")},
		Logger: zap.NewNop()})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	defer c.Close()
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	emit := func(v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		defer mu.Unlock()
		out.Write(b)
		out.WriteByte('\n')
		out.Flush()
	}
	fmt.Fprintln(out, "READY")
	out.Flush()

	stop := stopRequested()
	var seq atomic.Int64
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("g%d", rand.IntN(*grains))
				m := methods[rand.IntN(len(methods))]
				r := Result{Call: fmt.Sprintf("%s-%d", *name, seq.Add(1)), Key: key, Method: m.Name, Client: version}
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ack, err := m.Call(cctx, c, key, r.Call)
				cancel()
				if err != nil {
					r.Code, r.Outcome, r.Err = grain.CodeOf(err), grain.OutcomeOf(err).String(), err.Error()
				} else {
					r.RanMethod, r.RanVersion, r.RanSilo = ack.Method, ack.Version, ack.Silo
				}
				emit(r)
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	fmt.Fprintln(out, "DONE")
	out.Flush()
	return 0
}
