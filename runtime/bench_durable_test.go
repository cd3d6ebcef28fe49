package runtime_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

func pgCluster(b *testing.B, n int) (*runtimetest.Cluster, storage.Provider) {
	// pgx's default pool (4 connections on two cores) would queue 64
	// callers; a silo serving that many concurrent writes sizes its pool.
	pg := newPostgres(b, pgtest.DSN(b)+" pool_max_conns=32")
	obs := testgrains.NewObserver()
	c := runtimetest.NewCluster(b, n, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}, Storage: map[string]storage.Provider{runtime.DefaultStorage: pg}},
		Register: registerTestGrains(obs),
	})
	return c, pg
}

// BenchmarkPostgresColdActivation (W4-cold-activation) measures the latency
// of a call that activates a grain whose state is read from PostgreSQL:
// directory registration in etcd, one read, OnActivate, the call. One
// caller, so latencies are not queueing.
func BenchmarkPostgresColdActivation(b *testing.B) {
	const grains = 2000
	c, pg := pgCluster(b, 1)
	ctx := context.Background()
	data, err := msgpack.Marshal(map[string]int64{"n": 41})
	if err != nil {
		b.Fatal(err)
	}
	run := fmt.Sprint(time.Now().UnixNano())
	for i := range grains {
		k := storage.Key{GrainType: testgrains.CounterType.Name, GrainKey: fmt.Sprint("cold-", run, "-", i), State: "counter"}
		if _, err := pg.Write(ctx, k, data, ""); err != nil {
			b.Fatal(err)
		}
	}
	var st benchStats
	for b.Loop() {
		if st.calls > 0 {
			continue
		}
		st = benchRun(1, grains, 0, 0, func(i int) error {
			n, err := testgrains.NewCounterRef(c.Client(), fmt.Sprint("cold-", run, "-", i)).Get(ctx)
			if err == nil && n != 41 {
				err = fmt.Errorf("loaded %d, want 41", n)
			}
			return err
		})
	}
	if st.err != nil {
		b.Fatalf("%d of %d failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "activations/s")
}

// BenchmarkPostgresWrites (W4-writes) measures write-through throughput of
// one silo: 64 callers over 1,000 active grains, each call writing its
// grain's state to PostgreSQL before it returns.
func BenchmarkPostgresWrites(b *testing.B) {
	const grains, callers, duration = 1000, 64, 5 * time.Second
	c, _ := pgCluster(b, 1)
	ctx := context.Background()
	refs := make([]testgrains.CounterRef, grains)
	for i := range refs {
		refs[i] = testgrains.NewCounterRef(c.Client(), fmt.Sprint("w-", time.Now().UnixNano(), "-", i))
		if _, err := refs[i].Add(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	var st benchStats
	for b.Loop() {
		if st.calls > 0 {
			continue
		}
		st = benchRun(callers, 0, duration, grains, func(i int) error {
			_, err := refs[i%grains].AddDurable(ctx, 1)
			return err
		})
	}
	if st.err != nil {
		b.Fatalf("%d of %d failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "writes/s")
}
