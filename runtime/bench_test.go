package runtime_test

import (
	"context"
	"fmt"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
		var mu sync.Mutex
		var lat []time.Duration
		var next atomic.Int64
		b.SetParallelism(max(1, callers/goruntime.GOMAXPROCS(0)))
		b.ReportAllocs()
		b.ResetTimer()
		begin := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919)) % grains
			local := make([]time.Duration, 0, 1<<16)
			for pb.Next() {
				t0 := time.Now()
				if err := refs[i].Ping(ctx); err != nil {
					b.Error(err)
					return
				}
				local = append(local, time.Since(t0))
				i = (i + 1) % grains
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
		elapsed := time.Since(begin)
		b.StopTimer()
		reportLatency(b, lat, elapsed)
	})
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
