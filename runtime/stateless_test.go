package runtime_test

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// workerType is a stateless worker written by hand: Work holds its turn
// for a while and says which silo and activation ran it, counting how
// many turns of the type run at once (workerStats).
var workerType, workerCallerType, statefulWorkerType *grain.TypeDesc

func init() {
	workerType = &grain.TypeDesc{Name: "test.Worker", Methods: []grain.MethodDesc{
		{Name: "Work", NewArgs: func() any { return new(workArgs) }, NewReply: func() any { return new(workReply) },
			Invoke: func(ctx context.Context, impl any, args any) (any, error) {
				return impl.(*worker).work(ctx, args.(*workArgs))
			}},
		{Name: "Remind", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(plainErr) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				return newPlainErr(impl.(*worker).c.RegisterReminder(ctx, "beat", time.Hour, time.Hour)), nil
			}},
		{Name: "Deactivate", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(workReply) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				w := impl.(*worker)
				w.c.DeactivateOnIdle()
				return &workReply{Silo: w.c.SiloID(), Activation: w.c.ActivationID()}, nil
			}},
		{Name: "Timer", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(workReply) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				w := impl.(*worker)
				id := w.c.ActivationID()
				w.c.RegisterTimer(time.Millisecond, 0, func(context.Context) {
					w.st.mu.Lock()
					w.st.timers = append(w.st.timers, id)
					w.st.mu.Unlock()
				})
				return &workReply{Silo: w.c.SiloID(), Activation: id}, nil
			}},
	}}
	// workerCallerType is an ordinary grain that calls a worker.
	workerCallerType = &grain.TypeDesc{Name: "test.WorkerCaller", Methods: []grain.MethodDesc{
		{Name: "Call", NewArgs: func() any { return new(viaArgs) }, NewReply: func() any { return new(callerReply) },
			Invoke: func(ctx context.Context, impl any, args any) (any, error) {
				c := impl.(grain.Context)
				w, err := work(ctx, c, args.(*viaArgs).Key, 0)
				if err != nil {
					return nil, err
				}
				return &callerReply{Silo: c.SiloID(), Worker: *w}, nil
			}},
	}}
	statefulWorkerType = &grain.TypeDesc{Name: "test.StatefulWorker", Methods: []grain.MethodDesc{
		{Name: "Work", NewArgs: func() any { return new(workArgs) }, NewReply: func() any { return new(workReply) },
			Invoke: func(ctx context.Context, impl any, args any) (any, error) { return &workReply{}, nil }},
	}}
}

type workArgs struct {
	Hold time.Duration
	Gate bool // wait for workerStats.gate instead
}

type workReply struct{ Silo, Activation string }

type callerReply struct {
	Silo   string // the caller grain's
	Worker workReply
}

// workerStats is what the worker activations of one test saw.
type workerStats struct {
	running, maxRunning atomic.Int32
	// overlaps counts turns that began while another turn of the same
	// activation ran: one would be a broken single-turn rule.
	overlaps atomic.Int32
	ticks    atomic.Int32 // reminder ticks received
	gate     chan struct{}

	mu     sync.Mutex
	acts   map[string]bool // activation ids that ran a turn
	timers []string        // activation ids whose timer fired
}

func newWorkerStats() *workerStats {
	return &workerStats{gate: make(chan struct{}), acts: make(map[string]bool)}
}

func (st *workerStats) activations() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.acts)
}

type worker struct {
	c    grain.Context
	st   *workerStats
	busy atomic.Int32
}

func (w *worker) work(ctx context.Context, a *workArgs) (*workReply, error) {
	if w.busy.Add(1) > 1 {
		w.st.overlaps.Add(1)
	}
	defer w.busy.Add(-1)
	n := w.st.running.Add(1)
	defer w.st.running.Add(-1)
	for {
		m := w.st.maxRunning.Load()
		if n <= m || w.st.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	w.st.mu.Lock()
	w.st.acts[w.c.ActivationID()] = true
	w.st.mu.Unlock()
	if a.Gate {
		select {
		case <-w.st.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else if a.Hold > 0 {
		time.Sleep(a.Hold)
	}
	return &workReply{Silo: w.c.SiloID(), Activation: w.c.ActivationID()}, nil
}

// ReceiveReminder makes worker a grain.Remindable, so that only its being
// a stateless worker refuses its reminders.
func (w *worker) ReceiveReminder(context.Context, grain.Tick) error {
	w.st.ticks.Add(1)
	return nil
}

func registerWorker(st *workerStats, opts ...grain.TypeOption) func(*runtime.Silo) {
	return func(s *runtime.Silo) {
		s.RegisterGrainType(workerType, func(c grain.Context) any { return &worker{c: c, st: st} }, opts...)
		s.RegisterGrainType(workerCallerType, func(c grain.Context) any { return c }, grain.WithPlacement(grain.PlacePreferLocal))
	}
}

func work(ctx context.Context, c grain.Caller, key string, hold time.Duration) (*workReply, error) {
	r, err := grain.NewRef(c, workerType, key).Invoke(ctx, &workerType.Methods[0], &workArgs{Hold: hold})
	if err != nil {
		return nil, err
	}
	return r.(*workReply), nil
}

func callVia(t *testing.T, ctx context.Context, c grain.Caller, callerKey, workerKey string) *callerReply {
	t.Helper()
	r, err := grain.NewRef(c, workerCallerType, callerKey).Invoke(ctx, &workerCallerType.Methods[0], &viaArgs{Key: workerKey})
	if err != nil {
		t.Fatalf("WorkerCaller.Call: %v", err)
	}
	return r.(*callerReply)
}

// dirKeys returns how many directory entries etcd holds for grain type typ
// in cluster.
func dirKeys(t *testing.T, ctx context.Context, cluster, typ string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, runtime.ClusterPrefix(cluster)+"dir/"+typ+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// Under load from many concurrent callers a stateless worker grows past
// one activation on one silo, never past its max: at most max turns run at
// once, each activation runs one turn at a time, and the silo never holds
// more than max activations. When the load drops to one caller the extra
// activations are collected; when it stops, the last one is too. No
// directory entry ever exists.
//
// Without grain.StatelessWorker (an ordinary grain) the load shows one
// activation and one turn at a time; without the bound in dispatchToPool
// it shows more than max.
func TestStatelessWorkerScalesUpToMaxAndDown(t *testing.T) {
	const max = 4
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: registerWorker(st, grain.StatelessWorker(max), grain.WithCollectionAge(300*time.Millisecond)),
	})
	s := f.Silos[0]
	ctx := ctxT(t)
	id := grain.ID{Type: workerType.Name, Key: "w"}

	stop := make(chan struct{})
	var maxCount atomic.Int32
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			if n := int32(s.ActivationCount()); n > maxCount.Load() {
				maxCount.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	var callers sync.WaitGroup
	errs := make(chan error, 24)
	for range 24 {
		callers.Go(func() {
			for range 10 {
				r, err := work(ctx, s.Client(), "w", 10*time.Millisecond)
				if err != nil {
					errs <- err
					return
				}
				if r.Silo != s.ID() {
					errs <- fmt.Errorf("ran on silo %s, want %s", r.Silo, s.ID())
					return
				}
			}
		})
	}
	callers.Wait()
	close(stop)
	sampler.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	acts, peak := st.activations(), st.maxRunning.Load()
	t.Logf("under load: %d activations, %d turns at once at most, %d activations on the silo at most", acts, peak, maxCount.Load())
	if acts < 2 || acts > max {
		t.Fatalf("%d activations served the load, want 2 to %d", acts, max)
	}
	if peak < 2 || peak > max {
		t.Fatalf("at most %d turns ran at once, want 2 to %d", peak, max)
	}
	if n := maxCount.Load(); n > max {
		t.Fatalf("the silo held %d activations, more than max %d", n, max)
	}
	if n := st.overlaps.Load(); n != 0 {
		t.Fatalf("%d turns began while their activation ran another", n)
	}

	// One caller: the first idle activation takes each call, so the
	// others fall idle and go (one may linger: a call can arrive just
	// before the previous turn's activation is idle again).
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		if _, err := work(ctx, s.Client(), "w", 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		n, _ := runtime.StatelessPool(s, id)
		return n <= 2
	}, "the pool did not shrink under one caller")
	n, _ := runtime.StatelessPool(s, id)
	t.Logf("under one caller: %d activations", n)
	runtimetest.Eventually(t, 20*time.Second, func() bool { return s.ActivationCount() == 0 },
		"the idle pool was not collected: %d activations left", s.ActivationCount())
	if n := dirKeys(t, ctx, f.Name, workerType.Name); n != 0 {
		t.Fatalf("the directory holds %d entries of the stateless worker type", n)
	}
	// A new call starts a new pool.
	if _, err := work(ctx, s.Client(), "w", 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := runtime.StatelessPool(s, id); n != 1 {
		t.Fatalf("after collection, a call made a pool of %d activations, want 1", n)
	}
}

// The mailbox limit applies per worker: with max 2 and a limit of 2, two
// calls run and four wait, and the seventh fails with ErrOverloaded;
// every accepted call then completes.
func TestStatelessWorkerMailboxLimitPerWorker(t *testing.T) {
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: registerWorker(st, grain.StatelessWorker(2), grain.WithMailboxLimit(2)),
	})
	s := f.Silos[0]
	ctx := ctxT(t)
	id := grain.ID{Type: workerType.Name, Key: "m"}
	ref := grain.NewRef(s.Client(), workerType, "m")
	var calls sync.WaitGroup
	errs := make(chan error, 6)
	gated := func() {
		calls.Go(func() {
			_, err := ref.Invoke(ctx, &workerType.Methods[0], &workArgs{Gate: true})
			errs <- err
		})
	}
	gated()
	gated()
	runtimetest.Eventually(t, 10*time.Second, func() bool { return st.running.Load() == 2 }, "two turns never ran at once")
	for range 4 {
		gated()
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool { _, q := runtime.StatelessPool(s, id); return q == 4 },
		"four calls never waited")
	_, err := ref.Invoke(ctx, &workerType.Methods[0], &workArgs{})
	if !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("a call beyond 2 workers x 2 queued: %v, want ErrOverloaded", err)
	}
	close(st.gate)
	calls.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := st.activations(); n != 2 {
		t.Fatalf("%d activations, want 2", n)
	}
}

// countingDir counts the directory requests made for one grain type.
type countingDir struct {
	directory.Directory
	typ string
	n   atomic.Int64
}

func (d *countingDir) count(id grain.ID) {
	if id.Type == d.typ {
		d.n.Add(1)
	}
}

func (d *countingDir) Register(ctx context.Context, id grain.ID, e directory.Entry) (directory.Entry, error) {
	d.count(id)
	return d.Directory.Register(ctx, id, e)
}

func (d *countingDir) Lookup(ctx context.Context, id grain.ID) (directory.Entry, bool, error) {
	d.count(id)
	return d.Directory.Lookup(ctx, id)
}

func (d *countingDir) Unregister(ctx context.Context, id grain.ID, e directory.Entry) error {
	d.count(id)
	return d.Directory.Unregister(ctx, id, e)
}

// A stateless worker runs on the caller's silo: an in-process call on that
// silo, a grain's call on the calling grain's silo (not where the call
// came from), a client's call on the silo whose gateway received it; and
// none of that makes a directory request. A silo that does not host the
// type sends the call to one that does, and so does its gateway.
func TestStatelessWorkerRunsOnTheCallersSilo(t *testing.T) {
	st := newWorkerStats()
	dir := &countingDir{Directory: directory.NewMemory(), typ: workerType.Name}
	var n atomic.Int32
	host := registerWorker(st, grain.StatelessWorker(2))
	f := runtimetest.NewCluster(t, 2, runtimetest.Options{
		Config: runtime.WithDirectory(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}}, dir),
		Register: func(s *runtime.Silo) {
			if n.Add(1) <= 2 {
				host(s)
			} else { // the third silo hosts only the caller grain
				s.RegisterGrainType(workerCallerType, func(c grain.Context) any { return c })
			}
		},
	})
	a, b := f.Silos[0], f.Silos[1]
	ctx := ctxT(t)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return runtime.Hosting(a, workerType.Name) == 2 },
		"silo A never saw both hosts")
	for _, s := range []*runtime.Silo{a, b} {
		for _, key := range []string{"x", "y"} {
			r, err := work(ctx, s.Client(), key, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.Silo != s.ID() {
				t.Fatalf("Silo.Client of %s: the worker ran on %s", s.ID(), r.Silo)
			}
		}
	}
	// The caller grain, activated on B, called from A: its worker runs on B.
	if r := callVia(t, ctx, b.Client(), "c", "x"); r.Silo != b.ID() || r.Worker.Silo != b.ID() {
		t.Fatalf("caller grain activated from B: %+v, want it and its worker on %s", r, b.ID())
	}
	if r := callVia(t, ctx, a.Client(), "c", "x"); r.Silo != b.ID() || r.Worker.Silo != b.ID() {
		t.Fatalf("caller grain on B called from A: %+v, want it and its worker on %s", r, b.ID())
	}
	for _, s := range []*runtime.Silo{a, b} {
		c, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{s.GatewayAddress()}})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"x", "y", "z"} {
			r, err := work(ctx, c, key, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.Silo != s.ID() {
				t.Fatalf("a client of the gateway of %s: the worker ran on %s", s.ID(), r.Silo)
			}
		}
		c.Close()
	}
	for _, s := range []*runtime.Silo{a, b} {
		if gs := s.GatewayStats(); gs.Redirected+gs.Forwarded != 0 {
			t.Fatalf("gateway of %s redirected or forwarded stateless calls: %+v", s.ID(), gs)
		}
	}
	if n := dir.n.Load(); n != 0 {
		t.Fatalf("%d directory requests for the stateless worker type", n)
	}

	// A silo that does not host the type, and its gateway, send the calls
	// to a silo that does, still without the directory: the membership
	// says the type is a stateless worker.
	c3 := f.AddSilo()
	runtimetest.Eventually(t, 10*time.Second, func() bool { return runtime.Hosting(c3, workerType.Name) == 2 },
		"the third silo never saw the hosts")
	for range 4 {
		r, err := work(ctx, c3.Client(), "x", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Silo != a.ID() && r.Silo != b.ID() {
			t.Fatalf("a silo that does not host the type: the worker ran on %s", r.Silo)
		}
	}
	cl, err := runtime.Connect(ctx, runtime.ClientConfig{Gateways: []string{c3.GatewayAddress()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if r, err := work(ctx, cl, "x", 0); err != nil || (r.Silo != a.ID() && r.Silo != b.ID()) {
		t.Fatalf("a client of a gateway that does not host the type: %+v, %v", r, err)
	}
	if gs := c3.GatewayStats(); gs.Redirected != 1 {
		t.Fatalf("the gateway that does not host the type: %+v, want the call redirected", gs)
	}
	if n := dir.n.Load(); n != 0 {
		t.Fatalf("%d directory requests for the stateless worker type from a silo that does not host it", n)
	}
	if a.ActivationCount() > 2*2+1 || b.ActivationCount() > 2*2+1 {
		t.Fatalf("activations: A %d, B %d", a.ActivationCount(), b.ActivationCount())
	}
}

// A stateless worker has no reminders and no persistent state, and its
// max is bounded.
func TestStatelessWorkerRefusals(t *testing.T) {
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: func(s *runtime.Silo) {
			registerWorker(st, grain.StatelessWorker(2))(s)
			s.RegisterGrainType(statefulWorkerType, func(c grain.Context) any {
				return grain.NewState[workReply](c, "profile")
			}, grain.StatelessWorker(2))
		},
	})
	ctx := ctxT(t)
	r, err := grain.NewRef(f.Client(), workerType, "r").Invoke(ctx, &workerType.Methods[1], &struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.(*plainErr); !got.BadRequest || !strings.Contains(got.Msg, "stateless worker") {
		t.Fatalf("RegisterReminder on a stateless worker: %+v, want ErrBadRequest naming it a stateless worker", got)
	}
	_, err = grain.NewRef(f.Client(), statefulWorkerType, "s").Invoke(ctx, &statefulWorkerType.Methods[0], &workArgs{})
	if !errors.Is(err, grain.ErrActivationFailed) || !strings.Contains(err.Error(), `state "profile"`) ||
		!strings.Contains(err.Error(), "stateless worker") {
		t.Fatalf("a stateless worker with persistent state: %v, want ErrActivationFailed naming the state", err)
	}
	if n := f.Silos[0].ActivationCount(); n != 1 {
		t.Fatalf("%d activations, want the reminder's worker only", n)
	}

	if got, want := grain.NewTypeConfig(grain.StatelessWorker(0)).StatelessWorkers, goruntime.GOMAXPROCS(0); got != want {
		t.Fatalf("StatelessWorker(0) allows %d workers, want GOMAXPROCS %d", got, want)
	}
	s, err := runtime.NewSilo(runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterGrainType(workerType, func(c grain.Context) any { return &worker{c: c, st: st} }, grain.StatelessWorker(grain.MaxStatelessWorkers+1))
	if err := s.Start(ctx); err == nil || !strings.Contains(err.Error(), "want 1 to 1024") {
		s.Stop(ctx)
		t.Fatalf("Start with StatelessWorker(%d): %v, want a refusal", grain.MaxStatelessWorkers+1, err)
	}
}

// A silo that is stopping starts no new worker: a call that would need one
// runs on another silo hosting the type, still without the directory,
// while the silo's busy worker finishes its call.
func TestStatelessWorkerOfAStoppingSiloRunsElsewhere(t *testing.T) {
	st := newWorkerStats()
	dir := &countingDir{Directory: directory.NewMemory(), typ: workerType.Name}
	f := runtimetest.NewCluster(t, 2, runtimetest.Options{
		Config:   runtime.WithDirectory(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}}, dir),
		Register: registerWorker(st, grain.StatelessWorker(2)),
	})
	a, b := f.Silos[0], f.Silos[1]
	ctx := ctxT(t)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return runtime.Hosting(a, workerType.Name) == 2 },
		"silo A never saw both hosts")
	held := make(chan error, 1)
	go func() {
		_, err := grain.NewRef(a.Client(), workerType, "g").Invoke(ctx, &workerType.Methods[0], &workArgs{Gate: true})
		held <- err
	}()
	runtimetest.Eventually(t, 10*time.Second, func() bool { return st.running.Load() == 1 }, "the held call never ran")
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(ctx) }()
	// Until Stop begins, calls run on A; then on B.
	var last *workReply
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		r, err := work(ctx, a.Client(), "g", 0)
		if err != nil {
			t.Fatalf("a call while A stops: %v", err)
		}
		last = r
		return r.Silo == b.ID()
	}, "calls from stopping silo A never ran on B (last on %v)", last)
	if r, err := work(ctx, a.Client(), "new", 0); err != nil || r.Silo != b.ID() {
		t.Fatalf("a call to a new worker from stopping silo A: %+v, %v; want it run on %s", r, err, b.ID())
	}
	if n := dir.n.Load(); n != 0 {
		t.Fatalf("%d directory requests for the stateless worker type", n)
	}
	close(st.gate)
	if err := <-held; err != nil {
		t.Fatalf("the call held while A stopped: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStatelessWorkerCall measures in-process calls from 64
// concurrent callers to one grain id: an ordinary grain (one activation,
// calls one at a time) and a stateless worker of max activations.
func BenchmarkStatelessWorkerCall(b *testing.B) {
	const callers = 64
	for _, n := range []int{0, 1, goruntime.GOMAXPROCS(0), 16} {
		name, opts := "kind=ordinary", []grain.TypeOption(nil)
		if n > 0 {
			name, opts = fmt.Sprintf("kind=stateless/max=%d", n), []grain.TypeOption{grain.StatelessWorker(n)}
		}
		b.Run(name, func(b *testing.B) {
			c := runtimetest.NewCluster(b, 1, runtimetest.Options{
				Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
				Register: registerWorker(newWorkerStats(), opts...),
			})
			ctx := context.Background()
			if _, err := work(ctx, c.Client(), "b", 0); err != nil {
				b.Fatal(err)
			}
			benchParallel(b, callers, 1, func(int) error {
				_, err := work(ctx, c.Client(), "b", 0)
				return err
			})
		})
	}
}

// A silo that loses its lease drops its stateless workers with its other
// activations; once it rejoins, new workers of the new incarnation serve,
// and no worker of the old one ever runs again.
func TestStatelessWorkersOfAFencedSiloAreDropped(t *testing.T) {
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}, LeaseTTL: 2 * time.Second},
		Register: registerWorker(st, grain.StatelessWorker(2)),
	})
	s := f.Silos[0]
	ctx := ctxT(t)
	incOf := func(activation string) string { return strings.Split(activation, "/")[1] }
	first, err := work(ctx, s.Client(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	revokeLease(t, ctx, f, s)
	runtimetest.Eventually(t, 20*time.Second, func() bool {
		r, err := work(ctx, s.Client(), "f", 0)
		return err == nil && incOf(r.Activation) != incOf(first.Activation)
	}, "no worker of a new incarnation served after the fence")
	for range 20 {
		r, err := work(ctx, s.Client(), "f", 0)
		if err != nil {
			t.Fatal(err)
		}
		if incOf(r.Activation) == incOf(first.Activation) {
			t.Fatalf("worker %s of the fenced incarnation served after the rejoin", r.Activation)
		}
	}
	if n, _ := runtime.StatelessPool(s, grain.ID{Type: workerType.Name, Key: "f"}); n < 1 || n > 2 || s.ActivationCount() != n {
		t.Fatalf("after the rejoin: a pool of %d workers, %d activations; want 1 or 2 of each", n, s.ActivationCount())
	}
}

// A stateless worker's timers and DeactivateOnIdle belong to one
// activation: the timer fires on the activation that registered it, and
// DeactivateOnIdle takes only the calling activation away.
func TestStatelessWorkerTimersAndDeactivateOnIdle(t *testing.T) {
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: registerWorker(st, grain.StatelessWorker(2)),
	})
	s := f.Silos[0]
	ctx := ctxT(t)
	id := grain.ID{Type: workerType.Name, Key: "t"}
	ref := grain.NewRef(s.Client(), workerType, "t")
	// Two workers: one held, one that takes the next call.
	held := make(chan error, 1)
	go func() {
		_, err := ref.Invoke(ctx, &workerType.Methods[0], &workArgs{Gate: true})
		held <- err
	}()
	runtimetest.Eventually(t, 10*time.Second, func() bool { return st.running.Load() == 1 }, "the held call never ran")
	r, err := ref.Invoke(ctx, &workerType.Methods[3], &struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	timerOn := r.(*workReply).Activation
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.timers) == 1
	}, "the timer never fired")
	if st.timers[0] != timerOn {
		t.Fatalf("the timer registered by %s fired on %s", timerOn, st.timers[0])
	}
	if n, _ := runtime.StatelessPool(s, id); n != 2 {
		t.Fatalf("a pool of %d workers, want 2", n)
	}
	r, err = ref.Invoke(ctx, &workerType.Methods[2], &struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	if gone := r.(*workReply).Activation; gone != timerOn {
		t.Fatalf("DeactivateOnIdle ran on %s, want the idle worker %s", gone, timerOn)
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool { n, _ := runtime.StatelessPool(s, id); return n == 1 },
		"DeactivateOnIdle did not take the worker away")
	close(st.gate)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

// A reminder in the table for a stateless worker type (registered before
// the type became one) is refused at each tick, backing off, without
// starting a worker; the reminder stays in the table.
func TestStatelessWorkerRefusesStaleReminderTicks(t *testing.T) {
	name := fmt.Sprintf("stateless-rem-%d", time.Now().UnixNano())
	table := etcdReminders(t, name)
	ctx := ctxT(t)
	id := grain.ID{Type: workerType.Name, Key: "stale"}
	if _, err := table.Upsert(ctx, reminder.Entry{Grain: id, Name: "old", Start: time.Now(), Period: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	st := newWorkerStats()
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}, Logger: zap.New(core)},
		Register: registerWorker(st, grain.StatelessWorker(2)),
	})
	refused := func() int {
		return logs.FilterMessageSnippet("reminder tick refused").FilterField(zap.Stringer("grain", id)).Len()
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool { return refused() >= 1 }, "a refused reminder tick was not logged")
	time.Sleep(1500 * time.Millisecond) // 30 periods
	if n := refused(); n > 2 {
		t.Fatalf("%d refused ticks logged in 30 periods, want 1 or 2 (backing off)", n)
	}
	if n, a := st.ticks.Load(), f.Silos[0].ActivationCount(); n != 0 || a != 0 {
		t.Fatalf("%d ticks delivered, %d activations; want none", n, a)
	}
	entries, err := table.ListGrain(ctx, id)
	if err != nil || len(entries) != 1 {
		t.Fatalf("the reminder table holds %v, %v; want the refused reminder kept", entries, err)
	}
}
