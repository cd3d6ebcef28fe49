package testgrains

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-rt/granary/grain"
)

// ErrDomain is the domain error Probe.Fail returns.
var ErrDomain = grain.NewError("test.domain", "test: domain failure")

// ErrActivate is returned by OnActivate for keys in Observer.FailActivate.
var ErrActivate = errors.New("test: activation refused")

// Observer records what the test grains did, across every silo of a test.
type Observer struct {
	mu            sync.Mutex
	activations   map[grain.ID]int
	deactivations map[grain.ID]int
	serving       map[grain.ID]int
	barriers      map[string]chan struct{}
	failActivate  map[string]int

	// Violations counts turns that overlapped another turn of the same
	// grain, on any silo.
	Violations atomic.Int64
	// Cancelled counts Wait calls that ended because their context did.
	Cancelled atomic.Int64
	// Notes receives the messages of one-way Notify calls.
	Notes chan string
}

// NewObserver returns an empty observer.
func NewObserver() *Observer {
	return &Observer{
		activations:   map[grain.ID]int{},
		deactivations: map[grain.ID]int{},
		serving:       map[grain.ID]int{},
		barriers:      map[string]chan struct{}{},
		failActivate:  map[string]int{},
		Notes:         make(chan string, 1024),
	}
}

// Activations returns how often id was activated.
func (o *Observer) Activations(id grain.ID) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.activations[id]
}

// Deactivations returns how often id was deactivated (OnDeactivate ran).
func (o *Observer) Deactivations(id grain.ID) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.deactivations[id]
}

// AllActivations returns the activation count of every grain.
func (o *Observer) AllActivations() map[grain.ID]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[grain.ID]int, len(o.activations))
	for k, v := range o.activations {
		out[k] = v
	}
	return out
}

// FailActivations makes the next n activations of grains with this key fail.
func (o *Observer) FailActivations(key string, n int) {
	o.mu.Lock()
	o.failActivate[key] = n
	o.mu.Unlock()
}

// Open opens the named barrier, releasing every Wait on it.
func (o *Observer) Open(name string) { close(o.barrier(name)) }

func (o *Observer) barrier(name string) chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.barriers[name]
	if b == nil {
		b = make(chan struct{})
		o.barriers[name] = b
	}
	return b
}

func (o *Observer) activated(id grain.ID) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failActivate[id.Key] > 0 {
		o.failActivate[id.Key]--
		return ErrActivate
	}
	o.activations[id]++
	return nil
}

func (o *Observer) deactivated(id grain.ID) {
	o.mu.Lock()
	o.deactivations[id]++
	o.mu.Unlock()
}

func (o *Observer) enter(id grain.ID) {
	o.mu.Lock()
	o.serving[id]++
	if o.serving[id] > 1 {
		o.Violations.Add(1)
	}
	o.mu.Unlock()
}

func (o *Observer) exit(id grain.ID) {
	o.mu.Lock()
	o.serving[id]--
	o.mu.Unlock()
}

type counterState struct {
	N int64 `msgpack:"n"`
}

type counter struct {
	c     grain.Context
	obs   *Observer
	state *grain.State[counterState]
}

// NewCounter returns a Counter factory reporting to obs.
func NewCounter(obs *Observer) func(grain.Context) Counter {
	return func(c grain.Context) Counter {
		return &counter{c: c, obs: obs, state: grain.NewState[counterState](c, "counter")}
	}
}

func (g *counter) OnActivate(ctx context.Context) error { return g.obs.activated(g.c.ID()) }

func (g *counter) OnDeactivate(ctx context.Context, reason grain.DeactivationReason) error {
	g.obs.deactivated(g.c.ID())
	return nil
}

func (g *counter) Add(ctx context.Context, n int64) (int64, error) {
	g.obs.enter(g.c.ID())
	defer g.obs.exit(g.c.ID())
	g.state.Value.N += n
	return g.state.Value.N, nil
}

func (g *counter) Get(ctx context.Context) (int64, error) { return g.state.Value.N, nil }

func (g *counter) Bump(ctx context.Context, n int64) error {
	g.state.Value.N += n
	return nil
}

func (g *counter) AddDurable(ctx context.Context, n int64) (int64, error) {
	g.state.Value.N += n
	if err := g.state.Write(ctx); err != nil {
		g.state.Value.N -= n
		return 0, err
	}
	return g.state.Value.N, nil
}

func (g *counter) Deactivate(ctx context.Context) error {
	g.c.DeactivateOnIdle()
	return nil
}

type probe struct {
	c     grain.Context
	obs   *Observer
	turns int
}

// NewProbe returns a Probe factory reporting to obs.
func NewProbe(obs *Observer) func(grain.Context) Probe {
	return func(c grain.Context) Probe { return &probe{c: c, obs: obs} }
}

func (g *probe) OnActivate(ctx context.Context) error { return g.obs.activated(g.c.ID()) }

func (g *probe) OnDeactivate(ctx context.Context, reason grain.DeactivationReason) error {
	g.obs.deactivated(g.c.ID())
	return nil
}

func (g *probe) Enter(ctx context.Context, d time.Duration) (int, error) {
	g.obs.enter(g.c.ID())
	defer g.obs.exit(g.c.ID())
	g.turns++
	n := g.turns
	if d > 0 {
		time.Sleep(d)
	} else {
		goruntime.Gosched()
	}
	if g.turns != n {
		return 0, fmt.Errorf("turn %d interleaved with turn %d", n, g.turns)
	}
	return n, nil
}

func (g *probe) Wait(ctx context.Context, barrier string) error {
	select {
	case <-g.obs.barrier(barrier):
		return nil
	case <-ctx.Done():
		g.obs.Cancelled.Add(1)
		return ctx.Err()
	}
}

func (g *probe) Panic(ctx context.Context) error { panic("probe: told to panic") }

func (g *probe) Echo(ctx context.Context, in []string) ([]string, error) {
	if len(in) > 0 {
		in[0] = "changed by grain"
	}
	return in, nil
}

func (g *probe) Fail(ctx context.Context) error {
	return fmt.Errorf("probe %s: %w", g.c.ID().Key, ErrDomain)
}

func (g *probe) Return(ctx context.Context, code string) error {
	e, ok := grain.LookupError(code)
	if !ok {
		return fmt.Errorf("no error with code %q", code)
	}
	return fmt.Errorf("probe %s returns: %w", g.c.ID().Key, e)
}

func (g *probe) Ping(ctx context.Context) error { return nil }

func (g *probe) Notify(ctx context.Context, msg string) error {
	select {
	case g.obs.Notes <- msg:
	default:
	}
	return nil
}
