package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// filterLog records what filters saw.
type filterLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *filterLog) add(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *filterLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// recorder is a filter that logs the call as name saw it and passes it on.
func (l *filterLog) recorder(name string) grain.Filter {
	return func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) {
		who := "-"
		if id, ok := grain.CallerIdentity(ctx); ok {
			who = id.Name
		}
		l.add("%s %s.%s readonly=%t caller=%s", name, call.Target, call.Method.Name, call.Method.Flags.Has(grain.ReadOnly), who)
		return next(ctx)
	}
}

func TestIncomingFiltersSeeRefuseAndAnswerCalls(t *testing.T) {
	var log filterLog
	refuse := func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) {
		if call.Method.Name == "Add" && call.Args == nil {
			return nil, errors.New("filter: Add without arguments")
		}
		if call.Target.Key == "locked" && !call.Method.Flags.Has(grain.ReadOnly) {
			return nil, fmt.Errorf("%w: %s is locked", grain.ErrPermissionDenied, call.Target)
		}
		if call.Target.Key == "cached" && call.Method.Name == "Get" {
			return &grain.Reply[int64]{V: 42}, nil // answered without running the method
		}
		return next(ctx)
	}
	obs := testgrains.NewObserver()
	cfg := runtime.Config{IncomingFilters: []grain.Filter{log.recorder("silo"), refuse}}
	cfg.Etcd.Endpoints = endpoints
	c := newClusterWith(t, 1, cfg, func(s *runtime.Silo) {
		testgrains.RegisterCounter(s, testgrains.NewCounter(obs), grain.WithIncomingFilters(log.recorder("type")))
	})
	ctx := grain.WithCallerIdentity(ctxT(t), grain.Identity{Name: "alice", Scheme: "test"})

	free := testgrains.NewCounterRef(c.Client(), "free")
	if n, err := free.Add(ctx, 5); err != nil || n != 5 {
		t.Fatalf("Add: %d, %v", n, err)
	}
	if n, err := free.Get(ctx); err != nil || n != 5 {
		t.Fatalf("Get: %d, %v", n, err)
	}
	want := []string{
		"silo test.Counter/free.Add readonly=false caller=alice", "type test.Counter/free.Add readonly=false caller=alice",
		"silo test.Counter/free.Get readonly=true caller=alice", "type test.Counter/free.Get readonly=true caller=alice",
	}
	if got := log.take(); !slices.Equal(got, want) {
		t.Fatalf("filters saw\n%q\nwant (silo's first, then the type's)\n%q", got, want)
	}

	locked := testgrains.NewCounterRef(c.Client(), "locked")
	_, err := locked.Add(ctx, 1)
	if !errors.Is(err, grain.ErrPermissionDenied) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("refused Add: %v (outcome %v), want ErrPermissionDenied, did not run", err, grain.OutcomeOf(err))
	}
	if n, err := locked.Get(ctx); err != nil || n != 0 {
		t.Fatalf("Get after the refused Add: %d, %v; the Add must not have run", n, err)
	}
	// A filter's own error without an outcome is reported as did not run.
	cached := testgrains.NewCounterRef(c.Client(), "cached")
	if n, err := cached.Get(ctx); err != nil || n != 42 {
		t.Fatalf("Get answered by the filter: %d, %v", n, err)
	}
	if n, err := cached.Add(ctx, 1); err != nil || n != 1 {
		t.Fatalf("Add past the filter: %d, %v", n, err)
	}
}

func TestFilterErrorsWithoutAnOutcomeDidNotRun(t *testing.T) {
	errNope := errors.New("nope")
	reply, err := grain.RunFilters(context.Background(), []grain.Filter{
		func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) { return nil, errNope },
	}, &grain.CallInfo{}, func(ctx context.Context) (any, error) { t.Fatal("final ran"); return nil, nil })
	if reply != nil || !errors.Is(err, errNope) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("got %v, %v (outcome %v); want errNope, did not run", reply, err, grain.OutcomeOf(err))
	}
	// Once the call ran, its error keeps its own outcome.
	_, err = grain.RunFilters(context.Background(), []grain.Filter{
		func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) { return next(ctx) },
	}, &grain.CallInfo{}, func(ctx context.Context) (any, error) { return nil, grain.WithOutcome(errNope, grain.OutcomeFailed) })
	if grain.OutcomeOf(err) != grain.OutcomeFailed {
		t.Fatalf("outcome %v after the call ran, want failed", grain.OutcomeOf(err))
	}
}

type ctxKey struct{}

func newClusterWith(t *testing.T, n int, cfg runtime.Config, register func(*runtime.Silo)) *runtimetest.Cluster {
	t.Helper()
	return runtimetest.NewCluster(t, n, runtimetest.Options{Config: cfg, Register: register})
}

// TestOutgoingFiltersOfSilosAndClients: a silo's outgoing filters see the
// calls its grains make (with the turn's caller identity) and those made
// through Silo.Client; they can decorate the context the call goes on with
// and refuse calls before they are routed. A client's see its calls.
func TestOutgoingFiltersOfSilosAndClients(t *testing.T) {
	var log filterLog
	decorate := func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) {
		if call.Target.Key == "forbidden" {
			return nil, grain.ErrPermissionDenied
		}
		return next(context.WithValue(ctx, ctxKey{}, "decorated"))
	}
	sawValue := func(ctx context.Context, call *grain.CallInfo, next grain.Invoker) (any, error) {
		v, _ := ctx.Value(ctxKey{}).(string)
		log.add("in %s.%s value=%s", call.Target, call.Method.Name, v)
		return next(ctx)
	}
	obs := testgrains.NewObserver()
	cfg := runtime.Config{OutgoingFilters: []grain.Filter{log.recorder("out"), decorate}, IncomingFilters: []grain.Filter{sawValue}}
	cfg.Etcd.Endpoints = endpoints
	c := newClusterWith(t, 1, cfg, func(s *runtime.Silo) { testgrains.RegisterHops(s, obs) })
	ctx := grain.WithCallerIdentity(ctxT(t), grain.Identity{Name: "bob", Scheme: "test"})

	got, err := callHop(ctx, c.Client(), "test.Hop/a", "Call", "test.Hop/b")
	if err != nil || got != "a>b" {
		t.Fatalf("got %q, %v", got, err)
	}
	want := []string{
		"out test.Hop/a.Call readonly=false caller=bob", "in test.Hop/a.Call value=decorated",
		"out test.Hop/b.Call readonly=false caller=bob", "in test.Hop/b.Call value=decorated",
	}
	if got := log.take(); !slices.Equal(got, want) {
		t.Fatalf("filters saw\n%q\nwant\n%q", got, want)
	}
	_, err = callHop(ctx, c.Client(), "test.Hop/a", "Call", "test.Hop/forbidden")
	if !errors.Is(err, grain.ErrPermissionDenied) {
		t.Fatalf("call to a refused grain from a grain: %v", err)
	}
	if slices.Contains(log.take(), "in test.Hop/forbidden.Call value=decorated") {
		t.Fatal("the refused call reached its grain")
	}

	// A client's outgoing filters.
	client, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: c.Name, Etcd: runtime.EtcdConfig{Endpoints: endpoints},
		OutgoingFilters: []grain.Filter{log.recorder("client"), decorate}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if got, err := callHop(ctx, client, "test.Hop/c", "Read"); err != nil || got != "c" {
		t.Fatalf("client call: %q, %v", got, err)
	}
	if _, err := callHop(ctx, client, "test.Hop/forbidden", "Call"); !errors.Is(err, grain.ErrPermissionDenied) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("client call refused by its filter: %v", err)
	}
	// The client's filter saw both; the silo's incoming filter only the
	// first (a remote call's context values do not cross processes).
	want = []string{
		"client test.Hop/c.Read readonly=true caller=bob", "in test.Hop/c.Read value=",
		"client test.Hop/forbidden.Call readonly=false caller=bob",
	}
	if got := log.take(); !slices.Equal(got, want) {
		t.Fatalf("filters saw\n%q\nwant\n%q", got, want)
	}
}
