package runtime_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/reminder"
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

// BenchmarkReminders (W5-reminders) registers 100,000 reminders (period
// 10 s, first ticks spread over one period, so 10,000 ticks are due per
// second) in the etcd reminder table, starts three silos, and checks that
// every reminder fired exactly as often as it came due: each due time
// delivered once (or folded into a later tick's Missed count), none lost,
// none twice. It reports ticks/s over the window, the delay between due time
// and delivery (p50/p99) for first ticks, which activate their grain, and
// for later ticks, which find it active, and the CPU it took (cores, and
// ticks per CPU-second: the capacity on this machine).
func BenchmarkReminders(b *testing.B) {
	const reminders, period, lead = 100_000, 10 * time.Second, 15 * time.Second
	name := fmt.Sprintf("bench-rem-%d", time.Now().UnixNano())
	table := etcdReminders(b, name)
	ctx := context.Background()
	began := time.Now()
	starts := make([]time.Time, reminders)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < reminders; i = next.Add(1) - 1 {
				starts[i] = began.Add(lead + time.Duration(i)*period/reminders)
				e := reminder.Entry{Grain: grain.ID{Type: testgrains.ClockType.Name, Key: fmt.Sprint(i)}, Name: "beat",
					Start: starts[i], Period: period}
				if _, err := table.Upsert(ctx, e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.Logf("registered %d reminders in %v", reminders, time.Since(began))
	if b.Failed() {
		b.FailNow()
	}
	// The window: from the first due time to every reminder's second due
	// time + 5 s. Due times up to its end - 5 s must have been delivered.
	first, end := starts[0], starts[reminders-1].Add(period+5*time.Second)
	obs := testgrains.NewObserver()
	type seen struct {
		ticks, dueTimes int // deliveries; due times they account for (1 + Missed)
		last            time.Time
		dups            []time.Time // when a due time came again
	}
	perGrain := make([]seen, reminders)
	var firstH, laterH latencyHistogram
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range obs.Ticks {
			var i int
			fmt.Sscan(r.Grain.Key, &i)
			g := &perGrain[i]
			if !r.Tick.Due.After(g.last) {
				g.dups = append(g.dups, r.At)
			}
			g.last = r.Tick.Due
			// Ticks go on while the silos stop: count the due times
			// in the window, folded ones included.
			for k := range 1 + r.Tick.Missed {
				if !r.Tick.Due.Add(-time.Duration(k) * period).After(end) {
					g.dueTimes++
				}
			}
			if r.Tick.Due.After(end) {
				continue
			}
			g.ticks++
			if g.ticks == 1 {
				firstH.record(r.At.Sub(r.Tick.Due))
			} else {
				laterH.record(r.At.Sub(r.Tick.Due))
			}
		}
	}()
	var cpu time.Duration
	var stopped time.Time
	for b.Loop() {
		if cpu > 0 {
			continue
		}
		c := runtimetest.NewCluster(b, 3, runtimetest.Options{
			// State in memory: this measures reminders, not storage.
			Config: runtime.Config{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints},
				Storage:       map[string]storage.Provider{runtime.DefaultStorage: storage.NewMemory()},
				CollectionAge: time.Minute, MailboxLimit: 100},
			Register: func(s *runtime.Silo) { testgrains.RegisterClock(s, testgrains.NewClock(obs)) },
		})
		time.Sleep(time.Until(first))
		cpu0 := procCPU(os.Getpid())
		time.Sleep(time.Until(end))
		cpu = procCPU(os.Getpid()) - cpu0
		stopped = time.Now()
		for _, s := range c.Silos {
			s.Stop(ctx)
		}
	}
	close(obs.Ticks)
	<-done
	if n := obs.TicksDropped.Load(); n > 0 {
		b.Fatalf("the observer dropped %d ticks: counts are not exact", n)
	}
	var ticks, lost, extra, dups, handoverDups int
	for i, g := range perGrain {
		// Due times that must have been delivered, and those that may.
		must := 1 + int(end.Add(-5*time.Second).Sub(starts[i])/period)
		may := 1 + int(end.Sub(starts[i])/period)
		ticks += g.ticks
		switch {
		case g.dueTimes < must:
			lost++
		case g.dueTimes > may:
			extra++
		}
		for _, at := range g.dups {
			if at.Before(stopped) {
				dups++
			} else {
				handoverDups++
			}
		}
	}
	// While membership is stable a due time is delivered once; when a
	// silo stops, the one taking its buckets over may deliver again a
	// tick due after a tick of the same bucket whose delivery was being
	// retried (at least once, never lost).
	if lost+extra+dups > 0 {
		b.Errorf("of %d reminders, %d fired fewer times than they came due, %d more often; %d due times delivered twice",
			reminders, lost, extra, dups)
	}
	window := end.Sub(first)
	b.Logf("%d ticks in %v; first ticks p50 %v p99 %v; later ticks p50 %v p99 %v; %.2f cores",
		ticks, window.Round(time.Second), time.Duration(firstH.quantile(0.50)), time.Duration(firstH.quantile(0.99)),
		time.Duration(laterH.quantile(0.50)), time.Duration(laterH.quantile(0.99)), cpu.Seconds()/window.Seconds())
	b.ReportMetric(float64(handoverDups), "again-at-stop")
	b.ReportMetric(float64(ticks)/window.Seconds(), "ticks/s")
	b.ReportMetric(float64(ticks)/cpu.Seconds(), "ticks/cpu-s")
	b.ReportMetric(float64(firstH.quantile(0.50))/1e3, "first-p50-µs")
	b.ReportMetric(float64(firstH.quantile(0.99))/1e3, "first-p99-µs")
	b.ReportMetric(float64(laterH.quantile(0.50))/1e3, "p50-µs")
	b.ReportMetric(float64(laterH.quantile(0.99))/1e3, "p99-µs")
}
