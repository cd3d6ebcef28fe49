// Package runtimetest starts real silos for tests: an embedded etcd and any
// number of silos on it, each stopped when the test ends.
//
//	func TestAccount(t *testing.T) {
//		c := runtimetest.NewCluster(t, 2, runtimetest.Options{
//			Register: func(s *runtime.Silo) { bank.RegisterAccount(s, bank.NewAccount) },
//		})
//		acct := bank.NewAccountRef(c.Client(), "alice")
//		...
//	}
package runtimetest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed"
)

// Etcd starts an embedded etcd server that is closed when the test ends,
// and returns its client endpoints.
func Etcd(tb testing.TB) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.Config{})
	if err != nil {
		tb.Fatalf("runtimetest: start etcd: %v", err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	return srv.Endpoints()
}

// Options configure NewCluster.
type Options struct {
	// Config is the base configuration of every silo. Cluster defaults to
	// a name unique to the test; Etcd.Endpoints to a new embedded etcd.
	Config runtime.Config
	// Register registers the grain types on each silo.
	Register func(*runtime.Silo)
	// Verbose sends the silos' logs to the test log.
	Verbose bool
}

// Cluster is a set of started silos sharing one etcd and cluster name.
type Cluster struct {
	Endpoints []string
	Name      string
	Silos     []*runtime.Silo
	tb        testing.TB
	opts      Options
}

var clusterSeq atomic.Int64

// NewCluster starts n silos. They are stopped (gracefully) when the test
// ends.
func NewCluster(tb testing.TB, n int, opts Options) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, opts: opts}
	c.Endpoints = opts.Config.Etcd.Endpoints
	if len(c.Endpoints) == 0 {
		c.Endpoints = Etcd(tb)
	}
	c.Name = opts.Config.Cluster
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s-%d", sanitize(tb.Name()), clusterSeq.Add(1))
	}
	for range n {
		c.AddSilo()
	}
	return c
}

// AddSilo starts one more silo in the cluster.
func (c *Cluster) AddSilo() *runtime.Silo {
	c.tb.Helper()
	cfg := c.opts.Config
	cfg.Cluster = c.Name
	cfg.Etcd.Endpoints = c.Endpoints
	if cfg.Logger == nil {
		if c.opts.Verbose {
			cfg.Logger = zaptest.NewLogger(c.tb)
		} else {
			cfg.Logger = zap.NewNop()
		}
	}
	s, err := runtime.NewSilo(cfg)
	if err != nil {
		c.tb.Fatalf("runtimetest: %v", err)
	}
	if c.opts.Register != nil {
		c.opts.Register(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		c.tb.Fatalf("runtimetest: start silo: %v", err)
	}
	c.tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			c.tb.Errorf("runtimetest: stop silo %s: %v", s.ID(), err)
		}
	})
	c.Silos = append(c.Silos, s)
	return s
}

// Client returns the in-process client of the first silo.
func (c *Cluster) Client() grain.Caller { return c.Silos[0].Client() }

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("runtimetest: timed out after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}
