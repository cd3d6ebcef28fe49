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
	// Waiting counts Wait calls running now.
	Waiting atomic.Int64
	// Notes receives the messages of one-way Notify calls.
	Notes chan string
	// Ticks receives every reminder tick a Clock received, unless it is
	// full: then TicksDropped counts the tick.
	Ticks        chan TickRecord
	TicksDropped atomic.Int64
	// TickDelay (a time.Duration) is how long a Clock takes to handle a
	// reminder tick.
	TickDelay atomic.Int64
}

// TickRecord is one reminder tick a Clock received, and when.
type TickRecord struct {
	Grain grain.ID
	Tick  grain.Tick
	At    time.Time
}

func (o *Observer) tick(id grain.ID, t grain.Tick) {
	select {
	case o.Ticks <- TickRecord{Grain: id, Tick: t, At: time.Now()}:
	default:
		o.TicksDropped.Add(1)
	}
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
		Ticks:         make(chan TickRecord, 1<<16),
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
	g.obs.Waiting.Add(1)
	defer g.obs.Waiting.Add(-1)
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

func (g *probe) SumInts(ctx context.Context, vs []int64) (int64, error) {
	var sum int64
	for _, v := range vs {
		sum += v
	}
	return sum, nil
}

func (g *probe) Items(ctx context.Context, n int) ([]Item, error) {
	items := make([]Item, 0, min(max(n, 0), 1024))
	for i := range min(n, 1024) {
		items = append(items, Item{Name: fmt.Sprint(i), N: int64(i), At: time.Unix(int64(i), 0).UTC()})
	}
	return items, nil
}

func (g *probe) SumItems(ctx context.Context, items []Item) (int64, error) {
	var sum int64
	for _, it := range items {
		sum += it.N
	}
	return sum, nil
}

func (g *probe) Notify(ctx context.Context, msg string) error {
	select {
	case g.obs.Notes <- msg:
	default:
	}
	return nil
}

// ClockBehindDelay is the write-behind delay of Clock's "behind" state.
const ClockBehindDelay = 200 * time.Millisecond

type clock struct {
	c       grain.Context
	obs     *Observer
	through *grain.State[ClockCounts]
	behind  *grain.State[int64]
	lazy    *grain.State[int64]
	timer   grain.Timer
	ticks   int
	inTurn  atomic.Bool
}

// NewClock returns a Clock factory reporting to obs.
func NewClock(obs *Observer) func(grain.Context) Clock {
	return func(c grain.Context) Clock {
		return &clock{c: c, obs: obs,
			through: grain.NewState[ClockCounts](c, "through", grain.WithWriteThrough()),
			behind:  grain.NewState[int64](c, "behind", grain.WithWriteBehind(ClockBehindDelay)),
			lazy:    grain.NewState[int64](c, "lazy"),
		}
	}
}

func (g *clock) OnActivate(ctx context.Context) error { return g.obs.activated(g.c.ID()) }

func (g *clock) OnDeactivate(ctx context.Context, reason grain.DeactivationReason) error {
	g.obs.deactivated(g.c.ID())
	return nil
}

// turn marks a turn running and counts an overlap as a violation.
func (g *clock) turn() func() {
	if !g.inTurn.CompareAndSwap(false, true) {
		g.obs.Violations.Add(1)
		return func() {}
	}
	return func() { g.inTurn.Store(false) }
}

func (g *clock) StartTimer(ctx context.Context, spec TimerSpec) error {
	if g.timer != nil {
		g.timer.Stop()
	}
	var opts []grain.TimerOption
	if spec.KeepAlive {
		opts = append(opts, grain.KeepAlive())
	}
	g.timer = g.c.RegisterTimer(spec.Due, spec.Period, func(ctx context.Context) {
		defer g.turn()()
		g.ticks++
		if spec.SetBehind != 0 {
			g.behind.Value = spec.SetBehind
		}
		time.Sleep(spec.Hold)
	}, opts...)
	return nil
}

func (g *clock) StopTimer(ctx context.Context) error {
	if g.timer != nil {
		g.timer.Stop()
	}
	return nil
}

func (g *clock) TimerTicks(ctx context.Context) (int, error) { return g.ticks, nil }

func (g *clock) Hold(ctx context.Context, d time.Duration) error {
	defer g.turn()()
	time.Sleep(d)
	return nil
}

func (g *clock) Remind(ctx context.Context, name string, due, period time.Duration) error {
	return g.c.RegisterReminder(ctx, name, due, period)
}

func (g *clock) Forget(ctx context.Context, name string) error {
	return g.c.UnregisterReminder(ctx, name)
}

func (g *clock) ReminderNames(ctx context.Context) ([]string, error) {
	rs, err := g.c.Reminders(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return names, nil
}

// ReceiveReminder counts the tick in the write-through state.
func (g *clock) ReceiveReminder(ctx context.Context, t grain.Tick) error {
	defer g.turn()()
	if g.through.Value.Ticks == nil {
		g.through.Value.Ticks = map[string]int{}
	}
	g.through.Value.Ticks[t.Name]++
	g.through.Value.Missed += t.Missed
	if d := time.Duration(g.obs.TickDelay.Load()); d > 0 {
		time.Sleep(d)
	}
	g.obs.tick(g.c.ID(), t)
	return nil
}

func (g *clock) Counts(ctx context.Context) (ClockCounts, error) { return g.through.Value, nil }

func (g *clock) SetThrough(ctx context.Context, v int64) error {
	g.through.Value.Value = v
	return nil
}

func (g *clock) SetBehind(ctx context.Context, v int64) error {
	g.behind.Value = v
	return nil
}

func (g *clock) SetLazy(ctx context.Context, v int64) error {
	g.lazy.Value = v
	return nil
}
