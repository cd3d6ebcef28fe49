package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
)

// endpoints of the etcd shared by the tests of this package; each test uses
// its own cluster name, so their keys do not meet.
var endpoints []string

func TestMain(m *testing.M) {
	runtimetest.ChildMain(registerTestGrains(testgrains.NewObserver()))
	os.Exit(etcdembedtest.Main(m, &endpoints))
}

// registerTestGrains registers the test grain types, reporting to obs.
func registerTestGrains(obs *testgrains.Observer, opts ...grain.TypeOption) func(*runtime.Silo) {
	return func(s *runtime.Silo) {
		testgrains.RegisterReqCtx(s, testgrains.NewReqCtx(), opts...)
		testgrains.RegisterCounter(s, testgrains.NewCounter(obs), opts...)
		testgrains.RegisterProbe(s, testgrains.NewProbe(obs), opts...)
		testgrains.RegisterClock(s, testgrains.NewClock(obs), opts...)
		testgrains.RegisterHops(s, obs, opts...)
		testgrains.RegisterRoom(s, testgrains.NewRoom(), opts...)
		registerWho(s)
		registerPlacementGrains(s)
	}
}

type fixture struct {
	*runtimetest.Cluster
	obs *testgrains.Observer
}

// start starts n silos hosting the test grains on the shared etcd.
func start(t *testing.T, n int, cfg runtime.Config, opts ...grain.TypeOption) *fixture {
	t.Helper()
	obs := testgrains.NewObserver()
	cfg.Etcd.Endpoints = endpoints
	c := runtimetest.NewCluster(t, n, runtimetest.Options{Config: cfg, Register: registerTestGrains(obs, opts...)})
	return &fixture{Cluster: c, obs: obs}
}

func ctxT(t *testing.T) context.Context {
	// Generous: CI shares two cores between test packages.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCallActivatesAndReturns(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "a")
	for i := int64(1); i <= 3; i++ {
		n, err := c.Add(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n != i {
			t.Fatalf("Add #%d = %d, want %d", i, n, i)
		}
	}
	if got := f.obs.Activations(c.ID()); got != 1 {
		t.Fatalf("activations = %d, want 1", got)
	}
	if got := f.Silos[0].ActivationCount(); got != 1 {
		t.Fatalf("ActivationCount = %d, want 1", got)
	}
}

func TestDeactivatedGrainReloadsState(t *testing.T) {
	f := start(t, 1, runtime.Config{}, grain.WithCollectionAge(20*time.Millisecond))
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "reload")
	if _, err := c.Add(ctx, 5); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return f.obs.Deactivations(c.ID()) == 1 },
		"grain was not collected")
	runtimetest.Eventually(t, 5*time.Second, func() bool { return f.Silos[0].ActivationCount() == 0 },
		"activation still in the table")
	n, err := c.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("after reactivation Get = %d, want 5 (state not persisted or not reloaded)", n)
	}
	if got := f.obs.Activations(c.ID()); got != 2 {
		t.Fatalf("activations = %d, want 2", got)
	}
}

func TestDeactivateOnIdle(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "idle")
	if _, err := c.Add(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if err := c.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return f.Silos[0].ActivationCount() == 0 },
		"DeactivateOnIdle did not deactivate (collection age is 15m)")
	if n, err := c.Get(ctx); err != nil || n != 7 {
		t.Fatalf("Get = %d, %v; want 7", n, err)
	}
}

func TestTurnsOfOneGrainNeverInterleave(t *testing.T) {
	f := start(t, 1, runtime.Config{}, grain.WithMailboxLimit(2000))
	ctx := ctxT(t)
	p := testgrains.NewProbeRef(f.Client(), "serial")
	const calls = 1000
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	seen := make([]bool, calls+1)
	var mu sync.Mutex
	for range calls {
		wg.Go(func() {
			n, err := p.Enter(ctx, 0)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if n < 1 || n > calls || seen[n] {
				errs <- fmt.Errorf("turn number %d repeated or out of range", n)
			}
			seen[n] = true
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := f.obs.Violations.Load(); v != 0 {
		t.Fatalf("%d turns overlapped", v)
	}
}

func TestDifferentGrainsRunInParallel(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	a := testgrains.NewProbeRef(f.Client(), "a")
	b := testgrains.NewProbeRef(f.Client(), "b")
	// a's turn blocks until the barrier opens; b must still be served.
	aDone := make(chan error, 1)
	go func() { aDone <- a.Wait(ctx, "open") }()
	time.Sleep(20 * time.Millisecond)
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := b.Enter(bctx, 0); err != nil {
			t.Fatalf("call %d to b while a's turn runs: %v", i, err)
		}
	}
	select {
	case err := <-aDone:
		t.Fatalf("a's turn ended before the barrier opened: %v", err)
	default:
	}
	f.obs.Open("open")
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
}

func TestPanicReturnsErrorAndSiloKeepsServing(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "p")
	if _, err := c.Add(ctx, 3); err != nil {
		t.Fatal(err)
	}
	p := testgrains.NewProbeRef(f.Client(), "p")
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	err := p.Panic(ctx)
	if !errors.Is(err, grain.ErrPanic) {
		t.Fatalf("Panic() error = %v, want ErrPanic", err)
	}
	if !strings.Contains(err.Error(), "told to panic") {
		t.Fatalf("error %q does not carry the panic value", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("call after panic: %v", err)
	}
	if got := f.obs.Activations(p.ID()); got != 2 {
		t.Fatalf("probe activations = %d, want 2 (panicked activation must be torn down)", got)
	}
	if n, err := c.Get(ctx); err != nil || n != 3 {
		t.Fatalf("other grain: Get = %d, %v; want 3", n, err)
	}
}

func TestFullMailboxReturnsOverloaded(t *testing.T) {
	f := start(t, 1, runtime.Config{}, grain.WithMailboxLimit(2))
	ctx := ctxT(t)
	p := testgrains.NewProbeRef(f.Client(), "busy")
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	// One call holds the turn, two wait in the mailbox.
	for range 3 {
		wg.Go(func() {
			if err := p.Wait(ctx, "release"); err != nil {
				t.Errorf("queued call: %v", err)
			}
		})
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	err := p.Ping(ctx)
	if !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("call to a full mailbox: err = %v, want ErrOverloaded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("ErrOverloaded took %v; it must not wait", d)
	}
	f.obs.Open("release")
	wg.Wait()
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("after draining: %v", err)
	}
}

func TestTwoSilosNeverRunTwoActivations(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	ctx := ctxT(t)
	const ids, callersPerSilo = 200, 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*callersPerSilo)
	for _, s := range f.Silos {
		for range callersPerSilo {
			wg.Go(func() {
				for i := range ids {
					c := testgrains.NewCounterRef(s.Client(), fmt.Sprint("race-", i))
					if _, err := c.Add(ctx, 1); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id, n := range f.obs.AllActivations() {
		if n != 1 {
			t.Errorf("%s activated %d times, want 1", id, n)
		}
	}
	if v := f.obs.Violations.Load(); v != 0 {
		t.Fatalf("%d turns overlapped across silos", v)
	}
	total := f.Silos[0].ActivationCount() + f.Silos[1].ActivationCount()
	if total != ids {
		t.Fatalf("activations in tables = %d, want %d", total, ids)
	}
	for i := range ids {
		n, err := testgrains.NewCounterRef(f.Silos[i%2].Client(), fmt.Sprint("race-", i)).Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2*callersPerSilo {
			t.Fatalf("race-%d = %d, want %d (a call was lost or ran on a second activation)", i, n, 2*callersPerSilo)
		}
	}
}

func TestUnknownTypeAndMethod(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	_, err := f.Client().Invoke(ctx, &grain.Call{Target: grain.ID{Type: "no.Such", Key: "x"}})
	if !errors.Is(err, grain.ErrUnknownGrainType) {
		t.Fatalf("unknown type: err = %v, want ErrUnknownGrainType", err)
	}
	// A method the type does not have, even with the type's own descriptor,
	// is never run as another one.
	_, err = f.Client().Invoke(ctx, &grain.Call{Target: grain.ID{Type: testgrains.CounterType.Name, Key: "x"},
		Type: testgrains.CounterType, Method: &grain.MethodDesc{Name: "Foo"}, Args: &grain.Args0{}})
	if !errors.Is(err, grain.ErrUnknownMethod) || !strings.Contains(err.Error(), "test.Counter has no method Foo") {
		t.Fatalf("unknown method: err = %v, want ErrUnknownMethod naming test.Counter and Foo", err)
	}
	if grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("unknown method: %v (outcome %v)", err, grain.OutcomeOf(err))
	}
}

func TestDeadlineExpiresAndCancelsCallee(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	p := testgrains.NewProbeRef(f.Client(), "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Wait(ctx, "never")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, grain.ErrTimeout) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrTimeout", err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return f.obs.Cancelled.Load() == 1 },
		"callee's context was not cancelled")
	if err := p.Ping(ctxT(t)); err != nil {
		t.Fatalf("grain unusable after a timed-out call: %v", err)
	}
}

func TestResponseTimeoutAppliesWithoutDeadline(t *testing.T) {
	f := start(t, 1, runtime.Config{ResponseTimeout: 50 * time.Millisecond})
	err := testgrains.NewProbeRef(f.Client(), "slow").Wait(context.Background(), "never")
	if !errors.Is(err, grain.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout from the default response timeout", err)
	}
}

func TestDomainErrorReachesCaller(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	err := testgrains.NewProbeRef(f.Client(), "d").Fail(ctxT(t))
	if !errors.Is(err, testgrains.ErrDomain) {
		t.Fatalf("err = %v, want ErrDomain", err)
	}
}

func TestActivationFailureIsRetriedByNextCall(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	f.obs.FailActivations("flaky", 1)
	c := testgrains.NewCounterRef(f.Client(), "flaky")
	_, err := c.Add(ctx, 1)
	if !errors.Is(err, grain.ErrActivationFailed) || !errors.Is(err, testgrains.ErrActivate) {
		t.Fatalf("first call: err = %v, want ErrActivationFailed wrapping ErrActivate", err)
	}
	if n, err := c.Add(ctx, 1); err != nil || n != 1 {
		t.Fatalf("second call: %d, %v; want 1, nil", n, err)
	}
}

func TestArgumentsAreCopiedInProcess(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	in := []string{"original"}
	out, err := testgrains.NewProbeRef(f.Client(), "copy").Echo(ctxT(t), in)
	if err != nil {
		t.Fatal(err)
	}
	if in[0] != "original" {
		t.Fatalf("grain modified the caller's slice: %q", in[0])
	}
	if len(out) != 1 || out[0] != "changed by grain" {
		t.Fatalf("reply = %q", out)
	}
}

func TestOneWayCallIsDelivered(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	if err := testgrains.NewProbeRef(f.Client(), "ow").Notify(ctxT(t), "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-f.obs.Notes:
		if msg != "hello" {
			t.Fatalf("note = %q", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("one-way call not delivered")
	}
}

func TestStopPersistsStateForTheNextSilo(t *testing.T) {
	cfg := runtime.Config{Cluster: fmt.Sprintf("stop-%d", time.Now().UnixNano())}
	f := start(t, 1, cfg)
	ctx := ctxT(t)
	for i := range 20 {
		if _, err := testgrains.NewCounterRef(f.Client(), fmt.Sprint(i)).Add(ctx, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Silos[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := testgrains.NewCounterRef(f.Client(), "0").Get(ctx); !errors.Is(err, grain.ErrSiloUnavailable) {
		t.Fatalf("call to a stopped silo: err = %v, want ErrSiloUnavailable", err)
	}
	g := start(t, 1, cfg)
	for i := range 20 {
		n, err := testgrains.NewCounterRef(g.Client(), fmt.Sprint(i)).Get(ctx)
		if err != nil || n != int64(i) {
			t.Fatalf("grain %d after restart: %d, %v; want %d", i, n, err, i)
		}
	}
}

func TestIdleActivationsHoldNoGoroutines(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	before := goruntime.NumGoroutine()
	for i := range 2000 {
		if err := testgrains.NewProbeRef(f.Client(), fmt.Sprint(i)).Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return goruntime.NumGoroutine() < before+20 },
		"goroutines grew from %d with 2000 idle activations", before)
}

func TestUnreachableEtcdFailsWithinDialTimeout(t *testing.T) {
	s, err := runtime.NewSilo(runtime.Config{Etcd: runtime.EtcdConfig{
		Endpoints:   []string{"127.0.0.1:1"},
		DialTimeout: 500 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = s.Start(context.Background())
	if err == nil {
		s.Stop(context.Background())
		t.Fatal("Start succeeded against an unreachable etcd")
	}
	if !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("error %q does not say etcd is unreachable", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("Start took %v to fail; dial timeout is 500ms", d)
	}
}

func TestEmbeddedEtcdByDefault(t *testing.T) {
	obs := testgrains.NewObserver()
	s, err := runtime.NewSilo(runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testgrains.RegisterCounter(s, testgrains.NewCounter(obs))
	ctx := ctxT(t)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := testgrains.NewCounterRef(s.Client(), "x").Add(ctx, 2); err != nil || n != 2 {
		t.Fatalf("Add = %d, %v", n, err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRegistrationErrorsFailStart(t *testing.T) {
	s, err := runtime.NewSilo(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	obs := testgrains.NewObserver()
	testgrains.RegisterCounter(s, testgrains.NewCounter(obs))
	testgrains.RegisterCounter(s, testgrains.NewCounter(obs))
	err = s.Start(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "registered twice") {
		s.Stop(context.Background())
		t.Fatalf("Start with a duplicate type: err = %v", err)
	}
}

func TestConfigRejectsNonsense(t *testing.T) {
	for _, cfg := range []runtime.Config{
		{Cluster: "a/b"},
		{LeaseTTL: 100 * time.Millisecond},
		{MailboxLimit: -1},
		{CollectionAge: -time.Second},
	} {
		if _, err := runtime.NewSilo(cfg); err == nil {
			t.Errorf("NewSilo(%+v) accepted", cfg)
		}
	}
}

func TestCallBeforeStartFails(t *testing.T) {
	s, err := runtime.NewSilo(runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testgrains.RegisterProbe(s, testgrains.NewProbe(testgrains.NewObserver()))
	err = testgrains.NewProbeRef(s.Client(), "x").Ping(context.Background())
	if !errors.Is(err, grain.ErrSiloUnavailable) {
		t.Fatalf("call before Start: err = %v, want ErrSiloUnavailable", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop of a silo never started: %v", err)
	}
}

func TestLostLeaseFencesWithoutWritingState(t *testing.T) {
	f := start(t, 1, runtime.Config{LeaseTTL: 2 * time.Second})
	ctx := ctxT(t)
	s := f.Silos[0]
	c := testgrains.NewCounterRef(s.Client(), "fenced")
	if _, err := c.Add(ctx, 5); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	revokeLease(t, ctx, f.Cluster, s)
	// The fenced activation (holding 5, never written) must be gone: calls
	// fail until the silo rejoins as a new incarnation, then a new
	// activation starts from storage, where nothing was written.
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		n, err := c.Get(ctx)
		return err == nil && n == 0
	}, "the fenced activation kept serving, or the silo did not rejoin")
	st, err := cli.Get(ctx, runtime.ClusterPrefix(f.Name)+"state/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if st.Count != 0 {
		t.Fatalf("fenced silo wrote %d state records; it must drop state unwritten", st.Count)
	}
	if f.obs.Deactivations(c.ID()) != 0 {
		t.Fatal("OnDeactivate ran on a fenced silo")
	}
	if f.obs.Activations(c.ID()) != 2 {
		t.Fatalf("activations = %d, want 2 (the fenced one and the one after rejoining)", f.obs.Activations(c.ID()))
	}
}

// flakyStorage fails every write while failing is set.
type flakyStorage struct {
	*storage.Memory
	failing atomic.Bool
	writes  atomic.Int64
}

var errStorageDown = errors.New("storage down")

func (f *flakyStorage) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	f.writes.Add(1)
	if f.failing.Load() {
		return "", errStorageDown
	}
	return f.Memory.Write(ctx, k, data, etag)
}

func TestFailedWriteOnDeactivationKeepsActivationAndRetries(t *testing.T) {
	st := &flakyStorage{Memory: storage.NewMemory()}
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st}})
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "kept")
	if _, err := c.Add(ctx, 4); err != nil {
		t.Fatal(err)
	}
	st.failing.Store(true)
	if err := c.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return st.writes.Load() >= 1 }, "no write attempted")
	time.Sleep(100 * time.Millisecond)
	if n := st.writes.Load(); n > 3 {
		t.Fatalf("%d write attempts in 100ms: the retry must wait, not spin", n)
	}
	if got := f.Silos[0].ActivationCount(); got != 1 {
		t.Fatalf("activation count = %d; an activation whose state failed to write must be kept", got)
	}
	if n, err := c.Get(ctx); err != nil || n != 4 {
		t.Fatalf("kept activation: Get = %d, %v; want 4", n, err)
	}
	st.failing.Store(false)
	if err := c.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return f.Silos[0].ActivationCount() == 0 },
		"activation not deactivated once storage recovered")
	data, _, err := st.Memory.Read(ctx, storage.Key{GrainType: c.ID().Type, GrainKey: c.ID().Key, State: "counter"})
	if err != nil || len(data) == 0 {
		t.Fatalf("state not persisted after recovery: %q, %v", data, err)
	}
}

func TestConflictReturnedByAnotherGrainDoesNotTearDownCaller(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	p := testgrains.NewProbeRef(f.Client(), "relay")
	err := p.Return(ctx, grain.CodeOf(grain.ErrConflict))
	if !errors.Is(err, grain.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.obs.Activations(p.ID()); n != 1 {
		t.Fatalf("activations = %d: a conflict the grain merely returned tore it down", n)
	}
}

func TestCallsMoveOffAStoppedSilo(t *testing.T) {
	f := start(t, 2, runtime.Config{}, grain.WithPlacement(grain.PlacePreferLocal))
	ctx := ctxT(t)
	a, b := f.Silos[0], f.Silos[1]
	// Activate on b, then call through a so that a caches b as the host.
	if _, err := testgrains.NewCounterRef(b.Client(), "mover").Add(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if n, err := testgrains.NewCounterRef(a.Client(), "mover").Get(ctx); err != nil || n != 3 {
		t.Fatalf("through a: %d, %v", n, err)
	}
	if a.ActivationCount() != 0 {
		t.Fatal("grain activated on a; the test needs it on b")
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := testgrains.NewCounterRef(a.Client(), "mover").Get(ctx)
	if err != nil || n != 3 {
		t.Fatalf("after b stopped: Get through a = %d, %v; want 3", n, err)
	}
}

// A failed write on deactivation is retried after its backoff (100 ms,
// then 200 ms...), not at the idle collector's next pass, which with a
// long collection age is a minute away.
func TestDeactivationRetryDoesNotWaitForTheCollector(t *testing.T) {
	st := &flakyStorage{Memory: storage.NewMemory()}
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st}},
		grain.WithCollectionAge(4*time.Minute)) // quantum: 1 minute
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "retried")
	if _, err := c.Add(ctx, 5); err != nil {
		t.Fatal(err)
	}
	st.failing.Store(true)
	if err := c.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return st.writes.Load() >= 2 }, "no retry")
	st.failing.Store(false)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return f.Silos[0].ActivationCount() == 0 },
		"the activation was not deactivated by a retry once storage recovered")
	if n, err := c.Get(ctx); err != nil || n != 5 {
		t.Fatalf("after the retried deactivation: Get = %d, %v; want 5", n, err)
	}
}
