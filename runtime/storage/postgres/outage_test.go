package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

// TestOutage stops a private server for 5 s while workers run
// read-modify-write loops on a provider: calls fail (quickly, and clearly)
// while it is down, succeed again once it is back, on the same provider,
// and no acknowledged write is lost or applied twice.
func TestOutage(t *testing.T) {
	const (
		workers     = 8
		callTimeout = 2 * time.Second
		outage      = 5 * time.Second
		// slowest is the longest a call may take: its timeout and the time
		// to give up on the server's answer to a cancellation.
		slowest = callTimeout + 1500*time.Millisecond
	)
	t.Parallel() // on a server of its own
	srv := pgtest.StartServer(t)
	p := newProvider(t, postgres.Config{DSN: srv.DSN()})

	type stats struct {
		writes    int // acknowledged
		ambiguous int // failed other than with ErrConflict: may or may not have applied
		failures  int
		lastErr   error
		slowest   time.Duration
		okAfter   time.Time // time of the last successful write
	}
	var (
		mu    sync.Mutex
		st    = make([]stats, workers)
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		calls atomic.Int64
		keys  = make([]storage.Key, workers)
		call  = func(w int, fn func(ctx context.Context) error) error {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			start := time.Now()
			err := fn(ctx)
			d := time.Since(start)
			calls.Add(1)
			mu.Lock()
			defer mu.Unlock()
			st[w].slowest = max(st[w].slowest, d)
			if err != nil && !errors.Is(err, storage.ErrConflict) {
				st[w].failures++
				st[w].lastErr = err
			}
			return err
		}
	)
	for w := range workers {
		keys[w] = storage.Key{GrainType: "T", GrainKey: strconv.Itoa(w), State: "counter"}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var (
					data []byte
					etag string
				)
				err := call(w, func(ctx context.Context) (err error) { data, etag, err = p.Read(ctx, keys[w]); return err })
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				n := 0
				if etag != "" {
					if n, err = strconv.Atoi(string(data)); err != nil {
						t.Errorf("worker %d: stored counter %q: %v", w, data, err)
						return
					}
				}
				err = call(w, func(ctx context.Context) error {
					_, err := p.Write(ctx, keys[w], []byte(strconv.Itoa(n+1)), etag)
					return err
				})
				mu.Lock()
				switch {
				case err == nil:
					st[w].writes++
					st[w].okAfter = time.Now()
				case errors.Is(err, storage.ErrConflict):
					// Only after an ambiguous write that did apply.
				default:
					st[w].ambiguous++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	var stopOnce sync.Once
	stopWorkers := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer stopWorkers()
	snapshot := func() []stats {
		mu.Lock()
		defer mu.Unlock()
		return append([]stats(nil), st...)
	}

	time.Sleep(time.Second)
	for w, s := range snapshot() {
		if s.writes == 0 {
			t.Fatalf("worker %d made no write before the outage: %v", w, s.lastErr)
		}
	}

	srv.Stop()
	stopped := time.Now()
	before := snapshot()
	time.Sleep(outage)
	during := snapshot()
	srv.Start()
	restarted := time.Now()
	t.Logf("server down for %v", restarted.Sub(stopped).Round(time.Millisecond))

	failures := 0
	for w := range workers {
		failures += during[w].failures - before[w].failures
		if during[w].writes-before[w].writes > 1 { // one may have been acknowledged as the server went down
			t.Errorf("worker %d: %d writes acknowledged while the server was down", w, during[w].writes-before[w].writes)
		}
	}
	if failures == 0 {
		t.Fatal("no call failed while the server was down")
	}
	if err := during[0].lastErr; err == nil || !strings.HasPrefix(err.Error(), "postgres: ") ||
		!strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", srv.Port())) {
		t.Errorf("error during the outage %q should start with postgres: and name the server", err)
	} else {
		t.Logf("a call during the outage: %v", err)
	}

	// Every worker writes again soon after the restart.
	deadline := time.Now().Add(15 * time.Second)
	for {
		recovered := 0
		for _, s := range snapshot() {
			if s.okAfter.After(restarted) {
				recovered++
			}
		}
		if recovered == workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers wrote successfully within 15 s of the restart", recovered, workers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all workers writing again %v after the restart; %d calls in all",
		time.Since(restarted).Round(time.Millisecond), calls.Load())
	stopWorkers()

	// No acknowledged write lost, none applied twice.
	for w, s := range snapshot() {
		if s.slowest > slowest {
			t.Errorf("worker %d: a call took %v; calls have a %v timeout", w, s.slowest, callTimeout)
		}
		data, _, err := p.Read(t.Context(), keys[w])
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(string(data))
		if err != nil {
			t.Fatalf("worker %d: stored counter %q", w, data)
		}
		if n < s.writes || n > s.writes+s.ambiguous {
			t.Errorf("worker %d: counter is %d after %d acknowledged and %d ambiguous writes", w, n, s.writes, s.ambiguous)
		}
	}
}
