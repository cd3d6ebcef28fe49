package chaos

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
)

// Environment of the fault-injection test.
const (
	// envDuration: how long the nemesis runs (a Go duration), at least
	// one round of every fault. Unset: shortDuration, the pass `make
	// test` runs. `make chaos` sets 10m.
	envDuration = "GRANARY_CHAOS_DURATION"
	// envSeed: the nemesis's random seed, to replay a schedule.
	envSeed = "GRANARY_CHAOS_SEED"
	// envArtifacts: a directory under which every run keeps its logs and
	// history. Unset: a temporary directory, removed when the test passes.
	envArtifacts = "GRANARY_CHAOS_ARTIFACTS"
	// envBrokenFencing=1 runs the silos of TestFaultInjection built with
	// fencing broken (the granary_brokenfencing tag): the test must then
	// fail (`make chaos-broken`).
	envBrokenFencing = "GRANARY_CHAOS_BROKEN_FENCING"
	// envWriteThrough=1 makes the Register grain rely on the runtime's
	// write-through policy instead of writing explicitly.
	envWriteThrough = "GRANARY_CHAOS_WRITE_THROUGH"
	// envStorage=postgres stores the grains' state in PostgreSQL (a
	// throwaway database, see pgtest.DSN) instead of etcd. The partition
	// then cuts silo0 off from etcd only: its storage stays reachable
	// (a Unix socket), so a zombie's writes reach storage and only etags
	// stop them.
	envStorage = "GRANARY_CHAOS_STORAGE"
)

// shortDuration is how long the nemesis runs by default: a round of
// every fault takes about 16 s.
const shortDuration = 40 * time.Second

// pastLease is how long a frozen or partitioned silo stays so: beyond its
// lease, so that etcd expires it and other silos take its grains over.
const pastLease = 2*leaseTTL + 500*time.Millisecond

// fault is one thing the nemesis does, and undoes before it returns.
type fault struct {
	name string
	do   func(c *testCluster, h *history, rng *rand.Rand) error
}

var faults = []fault{
	{"kill -9 a silo and restart it", func(c *testCluster, h *history, rng *rand.Rand) error {
		s := c.silos[rng.IntN(len(c.silos))]
		h.note("kill -9 %s (%s)", s.name, s.siloID())
		s.kill()
		time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
		if err := s.start(); err != nil {
			return err
		}
		h.note("restarted %s as %s", s.name, s.siloID())
		return nil
	}},
	{"SIGSTOP a silo past its lease", func(c *testCluster, h *history, rng *rand.Rand) error {
		s := c.silos[rng.IntN(len(c.silos))]
		h.note("SIGSTOP %s (%s)", s.name, s.siloID())
		if err := s.freeze(); err != nil {
			return err
		}
		time.Sleep(pastLease)
		h.note("SIGCONT %s", s.name)
		return s.thaw()
	}},
	{"kill -9 etcd and restart it", func(c *testCluster, h *history, rng *rand.Rand) error {
		h.note("kill -9 etcd")
		c.etcd.kill()
		time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
		if err := c.etcd.start(); err != nil {
			return err
		}
		h.note("restarted etcd")
		return nil
	}},
	{"partition silo0 from etcd past its lease", func(c *testCluster, h *history, rng *rand.Rand) error {
		h.note("partition silo0 (%s) from etcd", c.silos[0].siloID())
		if err := c.net.cutEtcd(); err != nil {
			return err
		}
		time.Sleep(pastLease)
		h.note("heal the partition")
		return c.net.healEtcd()
	}},
}

// TestFaultInjection runs three silo processes and an etcd process under
// a nemesis that kills, freezes, restarts and partitions them, while
// clients read and write registers, and checks that every key's history
// is linearizable (porcupine) and that the final reads, after every fault
// healed, see every acknowledged write.
func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injection test starts processes and injects faults")
	}
	duration := shortDuration
	if v := os.Getenv(envDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", envDuration, v, err)
		}
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(envSeed); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, v, err)
		}
		seed = s
	}
	t.Logf("nemesis seed %d (replay with %s=%d)", seed, envSeed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	tags := ""
	if os.Getenv(envBrokenFencing) == "1" {
		tags = "granary_brokenfencing"
		t.Logf("%s=1: silos built with fencing broken; this test must fail", envBrokenFencing)
	}
	c := startCluster(t, tags)
	h := newHistory()
	w := &workload{h: h, keys: keyNames("k", 12), timeout: time.Second, pause: 20 * time.Millisecond}
	// Clients: one per silo through its gateway only (calls keep reaching
	// a silo cut off from etcd, as a load balancer's would), and one
	// through etcd, two callers each.
	callers := []grain.Caller{c.viewer}
	for _, addr := range c.addrs {
		callers = append(callers, c.connect(t, []string{addr}))
	}
	stop := make(chan struct{})
	client := 0
	for _, cl := range callers {
		for range 2 {
			w.start(client, cl, stop)
			client++
		}
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			w.wg.Wait()
		}
	}
	defer stopLoad()

	start := time.Now()
	injected := map[string]int{}
	// A fault the cluster does not recover from fails the test, and ends
	// the nemesis; the history is checked all the same.
nemesis:
	for round := 0; round == 0 || time.Since(start) < duration; round++ {
		order := rng.Perm(len(faults))
		if round == 0 {
			order = []int{0, 1, 2, 3} // the short pass: each fault once
		}
		for _, i := range order {
			f := faults[i]
			time.Sleep(time.Second) // calm before the fault
			if err := f.do(c, h, rng); err != nil {
				t.Errorf("nemesis: %s: %v", f.name, err)
				break nemesis
			}
			injected[f.name]++
			if err := c.healthy(30 * time.Second); err != nil {
				t.Errorf("after %s: %v", f.name, err)
				break nemesis
			}
			h.note("healthy again")
		}
	}
	c.heal()
	time.Sleep(time.Second)
	stopLoad()
	if err := w.finalReads(client, c.viewer, 30*time.Second); err != nil {
		t.Error(err)
	}
	ops, events, st := h.snapshot()
	t.Logf("nemesis ran %v: %v", time.Since(start).Round(time.Second), injected)
	t.Logf("history: %v", st)
	if st.overflow > 0 {
		t.Errorf("the history overflowed (%d ops): lower the call rate or raise maxOps", maxOps)
	}
	t.Logf("errors of failed calls, most frequent first: %s", errorSummary(ops, 6))
	res, err := check(c.dir, ops, events, checkTimeout(duration), os.Getenv(envArtifacts) != "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("linearizability check: %s in %v", res.result, res.took.Round(time.Millisecond))
	switch res.result {
	case porcupine.Illegal:
		t.Errorf("the history of keys %v is not linearizable: visualization %s, raw history %s", res.badKeys, res.htmlPath, res.rawPath)
	case porcupine.Unknown:
		t.Errorf("the linearizability check did not finish: history %s", res.rawPath)
	}
}

func checkTimeout(duration time.Duration) time.Duration {
	return max(time.Minute, duration/2)
}

// TestPartitionedSiloFencing plays the schedule that a silo without
// self-fencing gets wrong: silo0 is cut off from etcd while a client keeps
// reading through silo0's gateway, and after silo0's lease expired another
// client writes the same keys through etcd (so on another silo). With
// fencing the reads through silo0 fail once its fence deadline passed; with
// fencing deliberately broken (the granary_brokenfencing build tag) they
// keep returning the old values, and the checker must report the history
// as not linearizable.
func TestPartitionedSiloFencing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and partitions one from etcd")
	}
	for _, tc := range []struct {
		name          string
		tags          string
		wantLinearize bool
	}{
		{"fencing", "", true},
		{"broken-fencing", "granary_brokenfencing", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, tc.tags)
			h := newHistory()
			w := &workload{h: h, keys: keyNames("f", 4), timeout: 500 * time.Millisecond}
			g0 := c.connect(t, []string{c.addrs[0]})
			zombie := c.silos[0].siloID()
			for _, key := range w.keys {
				if o := w.put(0, g0, key); !o.OK || o.Silo != zombie {
					t.Fatalf("put %s through silo0's gateway: served by %q, %s; want %s (prefer-local placement)", key, o.Silo, o.Err, zombie)
				}
			}
			stop := make(chan struct{})
			w.wg.Go(func() {
				for {
					for _, key := range w.keys {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
						}
						w.get(1, g0, key)
					}
				}
			})
			stopReads := func() {
				if stop != nil {
					close(stop)
					w.wg.Wait()
					stop = nil
				}
			}
			defer stopReads()

			h.note("partition silo0 (%s) from etcd", zombie)
			if err := c.net.cutEtcd(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.viewer.View().WaitFor(ctx, func(s *cluster.Snapshot) bool {
				info, ok := s.Get(zombie)
				return !ok || info.Status == cluster.StatusDead
			}); err != nil {
				t.Fatalf("silo0's registration outlived its lease: %v", err)
			}
			h.note("silo0's lease expired")
			time.Sleep(300 * time.Millisecond)
			var written []op
			for _, key := range w.keys {
				o := w.put(2, c.viewer, key)
				for try := 0; !o.OK && try < 5; try++ {
					o = w.put(2, c.viewer, key)
				}
				if !o.OK || o.Silo == zombie {
					t.Fatalf("put %s through etcd after silo0's lease expired: served by %q, %s", key, o.Silo, o.Err)
				}
				written = append(written, o)
			}
			time.Sleep(time.Second) // reads through silo0 go on
			h.note("heal the partition")
			if err := c.net.healEtcd(); err != nil {
				t.Fatal(err)
			}
			stopReads()
			c.waitHealthy(t, 30*time.Second)
			if err := w.finalReads(3, c.viewer, 30*time.Second); err != nil {
				t.Error(err)
			}

			ops, events, st := h.snapshot()
			stale := staleReads(ops, written)
			t.Logf("history: %v; %d reads through silo0 returned a value older than a write acknowledged before they were sent", st, stale)
			res, err := check(c.dir, ops, events, time.Minute, os.Getenv(envArtifacts) != "")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("linearizability check: %s in %v", res.result, res.took.Round(time.Millisecond))
			switch {
			case res.result == porcupine.Unknown:
				t.Errorf("the linearizability check did not finish: history %s", res.rawPath)
			case tc.wantLinearize && res.result != porcupine.Ok:
				t.Errorf("with fencing the history is not linearizable: visualization %s, raw history %s", res.htmlPath, res.rawPath)
			case !tc.wantLinearize && res.result == porcupine.Ok:
				t.Errorf("with fencing broken the checker found the history linearizable (%d stale reads): the fault-injection test would not catch a zombie silo", stale)
			case !tc.wantLinearize:
				t.Logf("as it must, the checker caught the zombie: keys %v not linearizable (visualization written to %s; kept when %s is set)", res.badKeys, res.htmlPath, envArtifacts)
			}
		})
	}
}

// staleReads counts successful reads, called after one of written (all
// acknowledged) returned, of a value other than what it wrote to its key
// (the later writes in this test are only these).
func staleReads(ops []op, written []op) int {
	n := 0
	for _, o := range ops {
		if o.Kind != opGet || !o.OK {
			continue
		}
		for _, wr := range written {
			if wr.Key == o.Key && o.Call > wr.Return && o.Value != wr.Value {
				n++
				break
			}
		}
	}
	return n
}
