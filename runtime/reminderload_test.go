package runtime_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
)

// reminderLoad registers 100,000 reminders (period 10 s, first ticks
// spread over one period, so 10,000 ticks are due per second) in the etcd
// reminder table, starts three silos, and checks that every reminder fired
// exactly as often as it came due: each due time delivered once (or folded
// into a later tick's Missed count), none lost, none twice while the
// membership is stable. It measures ticks/s over the window, the delay
// between due time and delivery for first ticks, which activate their
// grain, and for later ticks, which find it active, and the CPU it took.
type reminderLoad struct {
	ticks, againAtStop int
	window, cpu        time.Duration
	first, later       latencyHistogram
}

func runReminderLoad(b testing.TB, lead time.Duration) *reminderLoad {
	const reminders, period = 100_000, 10 * time.Second
	name := fmt.Sprintf("rem-load-%d", time.Now().UnixNano())
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
	load := new(reminderLoad)
	firstH, laterH := &load.first, &load.later
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
	load.cpu = procCPU(os.Getpid()) - cpu0
	stopped := time.Now()
	for _, s := range c.Silos {
		s.Stop(ctx)
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
	load.ticks, load.againAtStop, load.window = ticks, handoverDups, end.Sub(first)
	b.Logf("%d ticks in %v; first ticks p50 %v p99 %v; later ticks p50 %v p99 %v; %.2f cores; %d delivered again at stop",
		ticks, load.window.Round(time.Second), time.Duration(firstH.quantile(0.50)), time.Duration(firstH.quantile(0.99)),
		time.Duration(laterH.quantile(0.50)), time.Duration(laterH.quantile(0.99)), load.cpu.Seconds()/load.window.Seconds(),
		handoverDups)
	return load
}

// BenchmarkReminders (W5-reminders) runs the reminder load once and reports
// ticks/s, the due-to-delivery delay (p50/p99) of first ticks (which
// activate their grain) and of later ticks, and ticks per CPU-second of
// the process (three silos and etcd: the capacity on this machine).
func BenchmarkReminders(b *testing.B) {
	var load *reminderLoad
	for b.Loop() {
		if load == nil {
			load = runReminderLoad(b, 15*time.Second)
		}
	}
	b.ReportMetric(float64(load.againAtStop), "again-at-stop")
	b.ReportMetric(float64(load.ticks)/load.window.Seconds(), "ticks/s")
	b.ReportMetric(float64(load.ticks)/load.cpu.Seconds(), "ticks/cpu-s")
	b.ReportMetric(float64(load.first.quantile(0.50))/1e3, "first-p50-µs")
	b.ReportMetric(float64(load.first.quantile(0.99))/1e3, "first-p99-µs")
	b.ReportMetric(float64(load.later.quantile(0.50))/1e3, "p50-µs")
	b.ReportMetric(float64(load.later.quantile(0.99))/1e3, "p99-µs")
}
