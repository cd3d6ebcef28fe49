package runtime_test

// Tests in this file run silos as separate OS processes (the test binary
// re-executed by runtimetest.StartSiloProcess) and call them from this
// process through runtime.Connect, so distribution and failure are real:
// gRPC between processes, kill -9, SIGSTOP.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

type procCluster struct {
	name   string
	silos  []*runtimetest.SiloProcess
	client *runtime.Client
}

func startProcesses(t *testing.T, n int, ttl time.Duration) *procCluster {
	t.Helper()
	return startProcessesOn(t, endpoints, n, ttl)
}

func startProcessesOn(t *testing.T, endpoints []string, n int, ttl time.Duration) *procCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts silo processes")
	}
	pc := &procCluster{name: fmt.Sprintf("proc-%s-%d", t.Name(), time.Now().UnixNano())}
	var wg sync.WaitGroup
	pc.silos = make([]*runtimetest.SiloProcess, n)
	for i := range n {
		wg.Go(func() {
			pc.silos[i] = runtimetest.StartSiloProcess(t, runtimetest.SiloProcessOptions{
				Endpoints: endpoints, Cluster: pc.name, LeaseTTL: ttl,
			})
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := ctxT(t)
	var err error
	pc.client, err = runtime.Connect(ctx, runtime.ClientConfig{Cluster: pc.name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.client.Close() })
	if _, err := pc.client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == n }); err != nil {
		t.Fatalf("client never saw %d active silos: %v", n, err)
	}
	return pc
}

// hosts reads the grain directory: grain key -> silo id, for one type.
func (pc *procCluster) hosts(t *testing.T, grainType string) map[string]string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := runtime.ClusterPrefix(pc.name) + "dir/" + grainType + "/"
	resp, err := cli.Get(ctxT(t), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e directory.Entry
		if err := msgpack.Unmarshal(kv.Value, &e); err != nil {
			t.Fatalf("directory entry %s: %v", kv.Key, err)
		}
		out[string(kv.Key[len(prefix):])] = e.SiloID
	}
	return out
}

// forEach runs fn for keys 0..n-1 with 64 concurrent callers.
func forEach(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

func TestProcessesSpreadTenThousandGrains(t *testing.T) {
	pc := startProcesses(t, 3, 0)
	// 20,000 calls, 10,000 activations, on race-instrumented silos that
	// share two cores with other test packages: be generous.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const grains = 10_000
	var failed atomic.Int64
	var firstErr atomic.Value
	forEach(grains, func(i int) {
		n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Add(ctx, int64(i))
		if err != nil || n != int64(i) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("grain %d: %d, %v", i, n, err))
		}
	})
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", f, grains, firstErr.Load())
	}
	perSilo := map[string]int{}
	hosts := pc.hosts(t, testgrains.CounterType.Name)
	for _, silo := range hosts {
		perSilo[silo]++
	}
	if len(hosts) != grains {
		t.Fatalf("directory has %d entries, want %d", len(hosts), grains)
	}
	for _, p := range pc.silos {
		if share := float64(perSilo[p.ID]) / grains; share < 0.20 {
			t.Errorf("silo %s hosts %d grains (%.0f%%), want at least 20%%", p.ID, perSilo[p.ID], 100*share)
		}
	}
	t.Logf("grains per silo: %v", perSilo)
	// A second round reaches the same activations.
	forEach(grains, func(i int) {
		n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Get(ctx)
		if err != nil || n != int64(i) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("grain %d second round: %d, %v", i, n, err))
		}
	})
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d calls failed in the second round; first: %v", f, firstErr.Load())
	}
}

func TestKillNineFailsOverWithPersistedState(t *testing.T) {
	const ttl = 2 * time.Second
	pc := startProcesses(t, 3, ttl)
	ctx := ctxT(t)
	const grains = 300
	for round := int64(1); round <= 3; round++ {
		forEach(grains, func(i int) {
			if _, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).AddDurable(ctx, 1); err != nil {
				t.Errorf("round %d grain %d: %v", round, i, err)
			}
		})
	}
	// Then a change that is never written: the grain must come back with
	// the last successful write, 3, not this one and nothing older.
	forEach(grains, func(i int) {
		if _, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Add(ctx, 100); err != nil {
			t.Errorf("unwritten add to grain %d: %v", i, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	hosts := pc.hosts(t, testgrains.CounterType.Name)
	victim := pc.silos[0]
	onVictim := 0
	for _, s := range hosts {
		if s == victim.ID {
			onVictim++
		}
	}
	if onVictim == 0 {
		t.Fatal("the victim hosts no grain")
	}
	victim.Kill()
	killed := time.Now()

	// Calls to grains of other silos never fail; calls to the victim's
	// fail at most until its lease expires, then see the persisted state.
	var mu sync.Mutex
	recovered := map[string]time.Duration{}
	deadline := killed.Add(ttl + 5*time.Second)
	for len(recovered) < grains && time.Now().Before(deadline) {
		forEach(grains, func(i int) {
			key := fmt.Sprint(i)
			mu.Lock()
			_, done := recovered[key]
			mu.Unlock()
			if done {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			n, err := testgrains.NewCounterRef(pc.client, key).Get(cctx)
			if err != nil {
				if hosts[key] != victim.ID {
					t.Errorf("grain %s on a live silo failed: %v", key, err)
				}
				return
			}
			if hosts[key] == victim.ID && n != 3 {
				t.Errorf("grain %s = %d after failover, want the last persisted value 3", key, n)
			}
			if hosts[key] != victim.ID && n != 103 {
				t.Errorf("grain %s on a live silo = %d, want 103", key, n)
			}
			mu.Lock()
			recovered[key] = time.Since(killed)
			mu.Unlock()
		})
		time.Sleep(50 * time.Millisecond)
	}
	if len(recovered) < grains {
		t.Fatalf("%d of %d grains answered within TTL+5s of the kill", len(recovered), grains)
	}
	var worst time.Duration
	for k, d := range recovered {
		if hosts[k] == victim.ID {
			worst = max(worst, d)
		}
	}
	t.Logf("%d grains failed over; the last answered %v after kill -9 (TTL %v)", onVictim, worst, ttl)
}

func TestSIGSTOPFencesAndNeverServesTwice(t *testing.T) {
	const ttl = 2 * time.Second
	pc := startProcesses(t, 2, ttl)
	ctx := ctxT(t)
	const grains = 100
	// ok counts acknowledged increments; unknown counts failed calls whose
	// outcome is unknown (a timeout after the request was sent).
	var ok, unknown [grains]atomic.Int64
	add := func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).AddDurable(cctx, 1)
		if err == nil {
			ok[i].Add(1)
		} else {
			unknown[i].Add(1)
		}
		return err
	}
	forEach(grains, func(i int) { _ = add(i) })
	victim := pc.silos[0]
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Load while the victim is frozen: its grains fail until its lease
	// expires, then move to the other silo.
	for time.Since(stopped) < 2*ttl+time.Second {
		forEach(grains, func(i int) { _ = add(i) })
	}
	before, _ := pc.client.View().Current().Get(victim.ID)
	if err := victim.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// It rejoins as a new incarnation without manual action.
	snap, err := pc.client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool {
		info, ok := s.Get(victim.ID)
		return ok && info.Status == cluster.StatusActive && info.Incarnation > before.Incarnation
	})
	if err != nil {
		t.Fatalf("victim did not rejoin as a new incarnation: %v", err)
	}
	info, _ := snap.Get(victim.ID)
	t.Logf("victim rejoined: incarnation %d -> %d", before.Incarnation, info.Incarnation)
	// The woken silo must have fenced itself: whatever it still held in
	// memory must not serve or be written over the newer state.
	for range 20 {
		forEach(grains, func(i int) { _ = add(i) })
	}
	for i := range grains {
		n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Get(ctx)
		if err != nil {
			t.Fatalf("grain %d: %v", i, err)
		}
		// Every acknowledged increment is there, and nothing beyond the
		// calls that may have run: a zombie activation writing over newer
		// state would lose increments, one serving twice would add some.
		if lo, hi := ok[i].Load(), ok[i].Load()+unknown[i].Load(); n < lo || n > hi {
			t.Errorf("grain %d = %d, want between %d (acknowledged) and %d (acknowledged + unknown outcome)", i, n, lo, hi)
		}
	}
}

func TestClientErrors(t *testing.T) {
	pc := startProcesses(t, 1, 0)
	ctx := ctxT(t)
	err := testgrains.NewProbeRef(pc.client, "p").Fail(ctx)
	if !errors.Is(err, testgrains.ErrDomain) {
		t.Fatalf("domain error across processes: %v", err)
	}
	if err := testgrains.NewProbeRef(pc.client, "p").Panic(ctx); !errors.Is(err, grain.ErrPanic) {
		t.Fatalf("panic across processes: %v", err)
	}
	unknown := &grain.TypeDesc{Name: "no.Such", Methods: []grain.MethodDesc{{Name: "X", NewArgs: func() any { return new(struct{}) }}}}
	if _, err := pc.client.Invoke(ctx, &grain.Call{Target: grain.ID{Type: "no.Such", Key: "k"}, Type: unknown, Method: &unknown.Methods[0], Args: &struct{}{}}); !errors.Is(err, grain.ErrUnknownGrainType) {
		t.Fatalf("unknown type across processes: %v", err)
	}
	nope := &grain.MethodDesc{Name: "Nope", NewArgs: func() any { return new(struct{}) }}
	other := &grain.TypeDesc{Name: testgrains.ProbeType.Name, Methods: []grain.MethodDesc{*nope}}
	_, err = pc.client.Invoke(ctx, &grain.Call{Target: grain.ID{Type: other.Name, Key: "k"}, Type: other, Method: nope, Args: &struct{}{}})
	if !errors.Is(err, grain.ErrUnknownMethod) || !strings.Contains(err.Error(), "test.Probe has no method Nope (silo "+pc.silos[0].ID+")") {
		t.Fatalf("unknown method across processes: %v", err)
	}
	out, err := testgrains.NewProbeRef(pc.client, "p").Echo(ctx, []string{"a", "b"})
	if err != nil || len(out) != 2 || out[0] != "changed by grain" {
		t.Fatalf("Echo across processes: %q, %v", out, err)
	}
	if _, err := runtime.Connect(ctx, runtime.ClientConfig{Etcd: runtime.EtcdConfig{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond}}); err == nil {
		t.Fatal("Connect to an unreachable etcd succeeded")
	}
	// Outcomes cross the process boundary with the errors.
	checkMethodOutcomes(t, ctx, pc.client)
}

func TestEtcdRestartUnderLoad(t *testing.T) {
	etcd := runtimetest.StartEtcdProcess(t)
	const ttl = 5 * time.Second
	pc := startProcessesOn(t, etcd.Endpoints, 2, ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const grains = 200
	var acked [grains]atomic.Int64
	// Calls under load use a short timeout; the checks before and after
	// use a long one, so a loaded CI machine does not fail them.
	timeout := 2 * time.Second
	add := func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).AddDurable(cctx, 1)
		if err == nil {
			acked[i].Add(1)
		}
		return err
	}
	forEach(grains, func(i int) {
		if err := add(i); err != nil {
			t.Errorf("before the restart, grain %d: %v", i, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	timeout = 300 * time.Millisecond
	stop := make(chan struct{})
	var failures atomic.Int64
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			forEach(grains, func(i int) {
				if add(i) != nil {
					failures.Add(1)
				}
			})
		}
	}()
	time.Sleep(300 * time.Millisecond)
	etcd.Kill()
	down := time.Now()
	time.Sleep(time.Second)
	etcd.Start()
	t.Logf("etcd was down for %v", time.Since(down))
	close(stop)
	<-loadDone
	timeout = 2 * time.Second

	// Without any manual action, every grain answers again.
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		bad := atomic.Int64{}
		forEach(grains, func(i int) {
			if add(i) != nil {
				bad.Add(1)
			}
		})
		return bad.Load() == 0
	}, "the cluster did not recover after the etcd restart")
	t.Logf("%d calls failed around the restart", failures.Load())
	// No acknowledged write was lost.
	for i := range grains {
		n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Get(ctx)
		if err != nil {
			t.Fatalf("grain %d: %v", i, err)
		}
		if n < acked[i].Load() {
			t.Errorf("grain %d = %d but %d writes were acknowledged", i, n, acked[i].Load())
		}
	}
}

func TestGracefulStopOfASiloProcessPersistsState(t *testing.T) {
	pc := startProcesses(t, 2, 2*time.Second)
	ctx := ctxT(t)
	const grains = 200
	// Add keeps the change in memory only: it must be written when the
	// silo stops gracefully.
	forEach(grains, func(i int) {
		if _, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Add(ctx, int64(i)); err != nil {
			t.Errorf("grain %d: %v", i, err)
		}
	})
	hosts := pc.hosts(t, testgrains.CounterType.Name)
	leaving := pc.silos[0]
	if err := leaving.Stop(30 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	moved := 0
	forEach(grains, func(i int) {
		n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint(i)).Get(ctx)
		if err != nil || n != int64(i) {
			t.Errorf("grain %d after the silo left: %d, %v; want %d", i, n, err, i)
		}
	})
	for _, s := range hosts {
		if s == leaving.ID {
			moved++
		}
	}
	t.Logf("%d grains moved off the stopped silo with their state", moved)
}

func TestClientWithStaticGateways(t *testing.T) {
	pc := startProcesses(t, 2, 0)
	ctx := ctxT(t)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: pc.name, Gateways: []string{pc.silos[0].Gateway, pc.silos[1].Gateway}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 50 {
		if n, err := testgrains.NewCounterRef(c, fmt.Sprint("gw-", i)).Add(ctx, 2); err != nil || n != 2 {
			t.Fatalf("through a gateway: %d, %v", n, err)
		}
	}
	// Both clients reach the same single activations.
	for i := range 50 {
		if n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint("gw-", i)).Add(ctx, 1); err != nil || n != 3 {
			t.Fatalf("through the etcd client: %d, %v; want 3", n, err)
		}
	}
}

func TestOneWayCallsThroughAGatewayAreDelivered(t *testing.T) {
	pc := startProcesses(t, 3, 0)
	ctx := ctxT(t)
	// One gateway: most grains are placed on other silos, so the gateway
	// must forward one-way calls it cannot answer "try X" to.
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: pc.name, Gateways: []string{pc.silos[0].Gateway}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const grains = 60
	for i := range grains {
		if err := testgrains.NewCounterRef(c, fmt.Sprint("ow-", i)).Bump(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		for i := range grains {
			if n, err := testgrains.NewCounterRef(pc.client, fmt.Sprint("ow-", i)).Get(ctx); err != nil || n != 1 {
				return false
			}
		}
		return true
	}, "one-way calls through a gateway were lost")
}

// Reminders owned by a silo that is killed -9 move to the others within a
// lease TTL; the ticks that fell due meanwhile fire once, late, marked as
// missed, and every reminder keeps ticking.
func TestRemindersTakenOverAfterKillNine(t *testing.T) {
	const ttl = 2 * time.Second
	const period = 400 * time.Millisecond
	t.Setenv(runtimetest.EnvReminderMinPeriod, "100ms")
	pc := startProcesses(t, 3, ttl)
	ctx := ctxT(t)
	const grains = 60
	forEach(grains, func(i int) {
		if err := testgrains.NewClockRef(pc.client, fmt.Sprint("r", i)).Remind(ctx, "beat", 0, period); err != nil {
			t.Errorf("grain %d: register: %v", i, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	counts := func() map[int]testgrains.ClockCounts {
		var mu sync.Mutex
		out := map[int]testgrains.ClockCounts{}
		forEach(grains, func(i int) {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			c, err := testgrains.NewClockRef(pc.client, fmt.Sprint("r", i)).Counts(cctx)
			if err != nil {
				return // its host may be the dead silo
			}
			mu.Lock()
			out[i] = c
			mu.Unlock()
		})
		return out
	}
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		c := counts()
		for i := range grains {
			if c[i].Ticks["beat"] < 2 {
				return false
			}
		}
		return true
	}, "not every reminder ticked twice")

	pc.silos[0].Kill()
	killed := time.Now()
	before := counts()
	// Within TTL plus a few periods every reminder ticks again, several
	// times, wherever its grain now lives.
	var after map[int]testgrains.ClockCounts
	runtimetest.Eventually(t, ttl+15*time.Second, func() bool {
		after = counts()
		for i := range grains {
			if after[i].Ticks["beat"] < before[i].Ticks["beat"]+3 {
				return false
			}
		}
		return true
	}, "reminders did not all resume after kill -9")
	missed := 0
	for i := range grains {
		missed += after[i].Missed
	}
	t.Logf("all %d reminders ticking again %v after kill -9 (TTL %v); %d missed ticks reported late", grains, time.Since(killed), ttl, missed)
	if missed == 0 {
		t.Error("no missed tick was reported: the dead silo's reminders were due during its outage and must fire late with Missed > 0")
	}
}
