package runtime_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

// newPostgres returns a provider on dsn, closed when the test ends.
func newPostgres(tb testing.TB, dsn string) *postgres.Provider {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := postgres.New(ctx, postgres.Config{DSN: dsn})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// PostgreSQL stopped for 5 s under load, then started: every acknowledged
// durable write survives, and activations whose writes were pending (a
// write-behind state changed during the outage, a deactivation that could
// not write) are persisted once it is back.
func TestPostgresOutageUnderLoad(t *testing.T) {
	srv := pgtest.StartServer(t)
	pg := newPostgres(t, srv.DSN())
	f := start(t, 2, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: pg}})
	ctx := ctxT(t)
	const grains = 50
	acked := make([]atomic.Int64, grains)
	var stop atomic.Bool
	var failures atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; !stop.Load(); i = (i + 16) % grains {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				n, err := testgrains.NewCounterRef(f.Client(), fmt.Sprint("pg-", i)).AddDurable(cctx, 1)
				cancel()
				if err != nil {
					failures.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				for { // acked[i] = max(acked[i], n)
					old := acked[i].Load()
					if n <= old || acked[i].CompareAndSwap(old, n) {
						break
					}
				}
			}
		})
	}
	clock := testgrains.NewClockRef(f.Client(), "pg-behind")
	if err := clock.SetBehind(ctx, 1); err != nil { // activate it
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	srv.Stop()
	down := time.Now()
	// During the outage: a write-behind change, accepted in memory, whose
	// flush fails until PostgreSQL is back.
	if err := clock.SetBehind(ctx, 42); err != nil {
		t.Fatalf("SetBehind on an active grain during the outage: %v", err)
	}
	time.Sleep(5*time.Second - time.Since(down))
	srv.Start()
	t.Logf("PostgreSQL down for %v; %d calls failed meanwhile", time.Since(down), failures.Load())
	time.Sleep(2 * time.Second) // load resumes
	stop.Store(true)
	wg.Wait()

	var behind int64
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		return stored(t, pg, clock.ID(), "behind", &behind) && behind == 42
	}, "the write-behind state was not persisted after PostgreSQL came back")

	for i := range grains {
		c := testgrains.NewCounterRef(f.Client(), fmt.Sprint("pg-", i))
		var st struct {
			N int64 `msgpack:"n"`
		}
		stored(t, pg, c.ID(), "counter", &st)
		if st.N < acked[i].Load() {
			t.Errorf("grain %d: stored %d < acknowledged %d: an acknowledged write was lost", i, st.N, acked[i].Load())
		}
		if acked[i].Load() == 0 {
			t.Errorf("grain %d: no write acknowledged at all", i)
		}
	}
}

// A deactivation whose write fails while PostgreSQL is down keeps the
// activation until the write succeeds.
func TestPostgresOutageKeepsActivationUntilPersisted(t *testing.T) {
	srv := pgtest.StartServer(t)
	pg := newPostgres(t, srv.DSN())
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: pg}},
		grain.WithCollectionAge(100*time.Millisecond))
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "pg-kept")
	if _, err := c.Add(ctx, 7); err != nil { // in memory only
		t.Fatal(err)
	}
	srv.Stop()
	time.Sleep(time.Second) // the collector tries and fails
	if n := f.Silos[0].ActivationCount(); n != 1 {
		t.Fatalf("%d activations: one whose state could not be written must be kept", n)
	}
	srv.Start()
	runtimetest.Eventually(t, 30*time.Second, func() bool { return f.Silos[0].ActivationCount() == 0 },
		"the activation was not deactivated after PostgreSQL came back")
	var st struct {
		N int64 `msgpack:"n"`
	}
	if !stored(t, pg, c.ID(), "counter", &st) || st.N != 7 {
		t.Fatalf("stored %+v, want 7", st)
	}
}
