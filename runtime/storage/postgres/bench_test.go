package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/reminder/remindertest"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
	"github.com/granary-rt/granary/runtime/storage/storagetest"
)

// BenchmarkPostgres runs the shared provider benchmarks (one caller) on the
// machine's PostgreSQL.
func BenchmarkPostgres(b *testing.B) {
	dsn := pgtest.DSN(b)
	storagetest.Bench(b, func(b *testing.B) storage.Provider {
		return newProvider(b, postgres.Config{DSN: dsn})
	})
}

// BenchmarkReminders runs the shared reminder table benchmarks.
func BenchmarkReminders(b *testing.B) {
	dsn := pgtest.DSN(b)
	b.Run("table=postgres", func(b *testing.B) {
		remindertest.Bench(b, func(b *testing.B) reminder.Table {
			return newReminderTable(b, postgres.ReminderConfig{DSN: dsn, Table: "reminders_" + uniqueTable()})
		})
	})
}

// BenchmarkParallel measures throughput and latency with many concurrent
// callers, as the activations of a busy silo make them: op=read reads one
// of 1,000 records; op=write overwrites the caller's own record with its
// current etag (each a compare-and-set). Reports ops/s and the p50, p99
// and mean latency of a call. The pool has one connection per caller.
func BenchmarkParallel(b *testing.B) {
	const (
		callers = 16
		records = 1000
		size    = 128
	)
	dsn := pgtest.DSN(b) + " pool_max_conns=" + strconv.Itoa(callers)
	for _, op := range []string{"read", "write"} {
		b.Run(fmt.Sprintf("op=%s/callers=%d/size=%d", op, callers, size), func(b *testing.B) {
			p := newProvider(b, postgres.Config{DSN: dsn})
			ctx := context.Background()
			value := make([]byte, size)
			keys := make([]storage.Key, records)
			etags := make([]string, records)
			for i := range keys {
				keys[i] = storage.Key{GrainType: "bench.Grain", GrainKey: strconv.Itoa(i), State: "s"}
				var err error
				if etags[i], err = p.Write(ctx, keys[i], value, ""); err != nil {
					b.Fatal(err)
				}
			}
			var call func(worker, i int) error
			switch op {
			case "read":
				call = func(_, i int) error {
					_, _, err := p.Read(ctx, keys[i%records])
					return err
				}
			case "write":
				// Worker w owns the records w, w+callers, ...: no conflicts.
				call = func(w, i int) error {
					k := w + callers*(i%(records/callers))
					var err error
					etags[k], err = p.Write(ctx, keys[k], value, etags[k])
					return err
				}
			}
			reportLatency(b, runParallel(b, callers, call))
		})
	}
}

// runParallel runs b.N calls on callers goroutines, handing them out from
// the b.Loop loop, and returns every call's latency.
func runParallel(b *testing.B, callers int, call func(worker, i int) error) []time.Duration {
	work := make(chan struct{}, callers)
	lats := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			i := 0
			for range work {
				start := time.Now()
				if err := call(w, i); err != nil {
					b.Error(err)
				}
				lats[w] = append(lats[w], time.Since(start))
				i++
			}
		})
	}
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return slices.Concat(lats...)
}

// reportLatency reports the rate of the calls and their latency. With more
// callers than cores the latency is bimodal (most calls are answered at
// once, some wait for a core), so the mean says more than the median.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(sum.Microseconds())/float64(len(lat)), "mean-µs")
}
