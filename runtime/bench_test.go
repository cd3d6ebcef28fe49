package runtime_test

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

func benchCluster(b *testing.B, etcd []string) *runtimetest.Cluster {
	obs := testgrains.NewObserver()
	return runtimetest.NewCluster(b, 1, runtimetest.Options{
		Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: etcd}},
		Register: func(s *runtime.Silo) {
			testgrains.RegisterCounter(s, testgrains.NewCounter(obs))
			testgrains.RegisterProbe(s, testgrains.NewProbe(obs))
		},
	})
}

// BenchmarkCall measures in-process grain calls: 64 concurrent callers over
// 10,000 already active grains. Reports calls/s and the p50/p99 latency.
func BenchmarkCall(b *testing.B) {
	const callers, grains = 64, 10_000
	b.Run(fmt.Sprintf("callers=%d/grains=%d", callers, grains), func(b *testing.B) {
		c := benchCluster(b, endpoints)
		ctx := context.Background()
		refs := make([]testgrains.ProbeRef, grains)
		for i := range refs {
			refs[i] = testgrains.NewProbeRef(c.Client(), fmt.Sprint(i))
			if err := refs[i].Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
		benchParallel(b, callers, grains, func(i int) error { return refs[i].Ping(ctx) })
	})
}

// benchParallel runs call from callers goroutines, each walking 0..n-1
// from its own offset, and reports calls/s and latency percentiles.
func benchParallel(b *testing.B, callers, n int, call func(i int) error) {
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int64
	b.SetParallelism(max(1, callers/goruntime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919)) % n
		local := make([]time.Duration, 0, 1<<16)
		for pb.Next() {
			t0 := time.Now()
			if err := call(i); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
			i = (i + 1) % n
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(begin)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkActivation measures activations per second: every call goes to a
// grain id never seen before, so each one registers in the etcd directory.
func BenchmarkActivation(b *testing.B) {
	b.Run("callers=64", func(b *testing.B) {
		c := benchCluster(b, endpoints)
		ctx := context.Background()
		var next atomic.Int64
		b.SetParallelism(max(1, 64/goruntime.GOMAXPROCS(0)))
		b.ResetTimer()
		begin := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ref := testgrains.NewProbeRef(c.Client(), fmt.Sprint("fresh-", next.Add(1)))
				if err := ref.Ping(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "activations/s")
	})
}

// BenchmarkIdleActivationHeap measures the heap held per idle activation of
// a grain without state: activation, table entry, directory bookkeeping.
// etcd runs in another process so that its own memory is not counted.
func BenchmarkIdleActivationHeap(b *testing.B) {
	const n = 20_000
	b.Run(fmt.Sprintf("activations=%d", n), func(b *testing.B) {
		c := benchCluster(b, runtimetest.EtcdProcess(b))
		ctx := context.Background()
		// Warm up pools and code paths before the baseline.
		for i := range 100 {
			if err := testgrains.NewProbeRef(c.Client(), fmt.Sprint("warm-", i)).Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
		var perActivation float64
		round := 0
		for b.Loop() {
			before := heapInUse()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			for i := range n {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if err := testgrains.NewProbeRef(c.Client(), fmt.Sprintf("idle-%d-%d", round, i)).Ping(ctx); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			perActivation = float64(heapInUse()-before) / n
			round++
		}
		b.ReportMetric(perActivation, "B/activation")
	})
}

func heapInUse() int64 {
	var ms goruntime.MemStats
	for range 3 {
		goruntime.GC()
	}
	goruntime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkGrainToGrain measures calls between grains, 64 concurrent
// callers over 1,000 grain pairs already active, each op one call from
// the benchmark into a Hop grain:
//   - hops=0: the grain calls nobody (the baseline);
//   - hops=1/in-process: it calls a grain on its silo;
//   - hops=1/remote: it calls a grain on another silo (two silos in this
//     process: the call crosses gRPC over loopback); the caller's type is
//     hosted only by the first silo, the callee's only by the second;
//   - callback/reentrant: A calls B, which calls A back, an interleaved
//     turn of the waiting A (test.HopReentrant).
//
// An op's cost minus the baseline's is the cost of the outgoing call.
func BenchmarkGrainToGrain(b *testing.B) {
	const pairs = 1_000
	for _, bc := range []struct {
		name  string
		silos int
		path  func(i int) (first string, rest []string)
	}{
		{"hops=0", 1, func(i int) (string, []string) { return fmt.Sprint("test.Hop/a", i), nil }},
		{"hops=1/in-process", 1, func(i int) (string, []string) {
			return fmt.Sprint("test.Hop/a", i), []string{fmt.Sprint("test.HopChain/b", i)}
		}},
		{"hops=1/remote", 2, func(i int) (string, []string) {
			return fmt.Sprint("test.Hop/a", i), []string{fmt.Sprint("test.HopChain/b", i)}
		}},
		{"callback/reentrant", 1, func(i int) (string, []string) {
			a := fmt.Sprint("test.HopReentrant/a", i)
			return a, []string{fmt.Sprint("test.HopChain/b", i), a}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := 0
			c := runtimetest.NewCluster(b, bc.silos, runtimetest.Options{
				Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
				Register: func(s *runtime.Silo) {
					// With two silos, the first hosts the callers' types
					// and the second the callees'.
					if n == 0 || bc.silos == 1 {
						testgrains.RegisterHop(s, func(c grain.Context) testgrains.Hop { return testgrains.NewHopImpl(c, nil) })
						testgrains.RegisterHopReentrant(s, func(c grain.Context) testgrains.HopReentrant { return testgrains.NewHopImpl(c, nil) }, grain.Reentrant())
					}
					if n == 1 || bc.silos == 1 {
						testgrains.RegisterHopChain(s, func(c grain.Context) testgrains.HopChain { return testgrains.NewHopImpl(c, nil) }, grain.WithCallChainReentrancy())
					}
					n++
				},
			})
			ctx := context.Background()
			caller := c.Silos[0].Client()
			for i := range pairs {
				first, rest := bc.path(i)
				// The first silo may not see the second yet.
				deadline := time.Now().Add(10 * time.Second)
				_, err := callHop(ctx, caller, first, "Call", rest...)
				for errors.Is(err, grain.ErrUnknownGrainType) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
					_, err = callHop(ctx, caller, first, "Call", rest...)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			benchParallel(b, 64, pairs, func(i int) error {
				first, rest := bc.path(i)
				_, err := callHop(ctx, caller, first, "Call", rest...)
				return err
			})
		})
	}
}
