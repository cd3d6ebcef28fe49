package runtime_test

// Cluster benchmarks: silos in child OS processes, etcd in its own process,
// and this process only a client (runtime.Connect), all on loopback. They
// measure what a deployment sees: gRPC between processes, the etcd
// directory, placement.
//
// Each benchmark runs its workload once, for a fixed duration or a fixed
// amount of work, whatever b.N is: the workload runs in the first b.Loop
// iteration only (b.Loop then stops, since that iteration outlasts any
// sensible -benchtime; extra iterations do nothing). ns/op is therefore
// meaningless; read the reported metrics (calls/s, activations/s, p50-µs,
// p99-µs). `make bench` runs them with -benchtime=1x.
//
// Profiling: with GRANARY_BENCH_PROFILE=<dir> in the environment, each
// benchmark writes CPU profiles covering only its measurement window: one of
// this (client) process, <dir>/<workload>-client.pprof, and one of each silo
// process, <dir>/<workload>-silo<N>-<pid>.pprof. Read them with
// `go tool pprof -top <test binary> <profile>` (build the binary with
// `go test -c -o runtime.test ./runtime/` to have its symbols at hand).

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

const (
	benchCallers = 64
	// envBenchProfile names a directory: when set, the cluster benchmarks
	// write CPU profiles of the client and of every silo process there.
	envBenchProfile = "GRANARY_BENCH_PROFILE"
)

// BenchmarkClusterRemoteCall (W1-remote) measures calls from a client
// process to two silo processes: 10,000 grains activated beforehand, 64
// concurrent callers calling Probe.Ping for 10 seconds.
func BenchmarkClusterRemoteCall(b *testing.B) {
	const grains, duration = 10_000, 10 * time.Second
	bc := startBenchCluster(b, 2)
	ctx := context.Background()
	refs := make([]testgrains.ProbeRef, grains)
	for i := range refs {
		refs[i] = testgrains.NewProbeRef(bc.client, fmt.Sprint("w1-", i))
	}
	// Activate every grain, and warm the client's directory cache and
	// connections.
	if st := benchRun(benchCallers, grains, 0, func(i int) error { return refs[i].Ping(ctx) }); st.err != nil {
		b.Fatalf("activating %d grains: %d calls failed; first: %v", grains, st.errors, st.err)
	}
	var st benchStats
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		stop := bc.profile(b, "W1-remote")
		// Each caller walks the grains from its own offset, so that callers
		// rarely meet on one grain.
		st = benchRun(benchCallers, 0, duration, func(i int) error { return refs[i%grains].Ping(ctx) })
		stop()
	}
	if st.err != nil {
		b.Errorf("%d of %d calls failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "calls/s")
}

// BenchmarkClusterActivation (W2-activation) measures activations per
// second: 200,000 grain ids never called before, called once each through
// the client by 64 concurrent callers. Each call is a real activation on
// one of two silo processes: the client finds no directory entry (an etcd
// read), places the grain on a silo, which registers it in the etcd
// directory (an etcd transaction) before the turn runs.
//
// Single activation stays strict: every registration is a
// create-if-absent transaction bound to the silo's lease, one per grain, so
// etcd's write throughput (one raft proposal and fsync-batched WAL append
// per registration, on the same two cores here) is the expected limit.
// Batching registrations into fewer transactions would raise it without
// weakening the guarantee; caching or skipping them would not be strict.
func BenchmarkClusterActivation(b *testing.B) {
	const fresh = 200_000
	bc := startBenchCluster(b, 2)
	ctx := context.Background()
	// Warm the client's connections to both silos.
	if st := benchRun(benchCallers, 200, 0, func(i int) error {
		return testgrains.NewProbeRef(bc.client, fmt.Sprint("w2-warm-", i)).Ping(ctx)
	}); st.err != nil {
		b.Fatalf("warm-up: %v", st.err)
	}
	var st benchStats
	ran := false
	for b.Loop() {
		if ran {
			continue
		}
		ran = true
		stop := bc.profile(b, "W2-activation")
		st = benchRun(benchCallers, fresh, 0, func(i int) error {
			return testgrains.NewProbeRef(bc.client, fmt.Sprint("w2-", i)).Ping(ctx)
		})
		stop()
	}
	if st.err != nil {
		b.Errorf("%d of %d activations failed; first: %v", st.errors, st.calls, st.err)
	}
	st.report(b, "activations/s")
}

// benchCluster is etcd and silos in their own processes, and a client in
// this one.
type benchCluster struct {
	silos  []*runtimetest.SiloProcess
	client *runtime.Client
}

func startBenchCluster(b *testing.B, n int) *benchCluster {
	b.Helper()
	if testing.Short() {
		b.Skip("starts etcd and silo processes")
	}
	etcd := runtimetest.EtcdProcess(b)
	name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	bc := &benchCluster{silos: make([]*runtimetest.SiloProcess, n)}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			bc.silos[i] = runtimetest.StartSiloProcess(b, runtimetest.SiloProcessOptions{Endpoints: etcd, Cluster: name})
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if bc.client, err = runtime.Connect(ctx, runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: etcd}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bc.client.Close() })
	if _, err := bc.client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == n }); err != nil {
		b.Fatalf("client never saw %d active silos: %v", n, err)
	}
	return bc
}

