package runtime

import (
	"context"
	"errors"
	"fmt"
	rtdebug "runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// status of an activation. Transitions only move forward, except that a
// deactivation whose state write failed returns to valid to retry later:
// activating -> valid -> deactivating -> dead, or activating -> dead.
type status uint8

const (
	statusActivating status = iota
	statusValid
	statusDeactivating
	statusDead
)

// activation is one in-memory instance of a grain. While idle it is this
// struct, the implementation and its states: no goroutine, no timer, no
// channel. A goroutine runs while the mailbox has messages, then exits.
type activation struct {
	silo *Silo
	typ  *grainType
	id   grain.ID
	// seq numbers the activation on its silo; with the silo's id and
	// incarnation it forms the directory entry.
	seq uint64
	// inc is the silo incarnation the activation belongs to: its lease
	// fences it, its directory holds its entry.
	inc *incarnation
	// pool is the pool of a stateless worker (stateless.go), nil for a
	// grain's single activation.
	pool *workerPool

	mu     sync.Mutex
	status status
	// running: a goroutine holds the turn token: it runs a turn, the turn
	// loop, or the (de)activation (see turn.go).
	running bool
	queue   queue // mailbox, FIFO
	// ready holds calls admitted to start while turns wait on calls they
	// made (interleaving, call-chain reentrancy); they start before the
	// mailbox.
	ready queue
	// waiting are the turns that gave the token up while they wait on
	// calls they made; resumers, those whose calls returned and that wait
	// for the token, in order.
	waiting  []*turn
	resumers []*resumer
	// turnSeq numbers the activation's turns; owned by the token holder.
	turnSeq uint64
	// failing: a turn failed (panic, conflict, failed write) while others
	// waited on calls they made; they finish, writing nothing, and the
	// last one tears the activation down.
	failing bool
	// lastActive is when the mailbox last became empty, in nanoseconds on
	// the silo's monotonic clock.
	lastActive int64
	// deactivate, when set, is why the activation must deactivate as soon
	// as its mailbox is empty (DeactivateOnIdle, silo stopping).
	deactivate grain.DeactivationReason
	logger     *zap.Logger

	// conflict is set when a state write or clear of this activation met a
	// stale etag: another activation wrote since this one read, so this
	// one must go without writing.
	conflict atomic.Bool
	// accounted: the activation's state was written on deactivation, or
	// it was counted as dropped with its state unwritten (see lost).
	accounted atomic.Bool

	// remindable says whether the implementation is a grain.Remindable:
	// remindableUnknown until the factory returned (see build). Atomic:
	// RegisterReminder may be called from any goroutine of the grain.
	remindable atomic.Uint32

	// timers registered by the grain and the write-behind flush timer;
	// both guarded by mu, stopped when the activation dies.
	timers     map[*grainTimer]struct{}
	flushTimer *time.Timer

	// Owned by the goroutine that holds running.
	impl          any
	states        []attachedState
	through       bool          // some state is write-through
	behind        time.Duration // smallest write-behind delay; 0: none
	flushArmed    bool          // a write-behind flush is scheduled
	flushFailures int           // consecutive failed flushes
	writeFailures int           // consecutive failed deactivation writes
	counted       bool          // a turn that counts as activity ran since the mailbox was last empty
	// writeFailed is the first state write or clear that failed since the
	// last turn ended (set by stateStore). After a call or timer turn it
	// tears the activation down without writing: the in-memory state is
	// not what storage holds, and when the outcome is unknown the write
	// may even have landed, so only a reload tells the truth.
	writeFailed error
}

// Values of activation.remindable.
const (
	remindableUnknown uint32 = iota
	remindableYes
	remindableNo
)

// attachedState is one declared state with its configuration.
type attachedState struct {
	p   grain.Persistent
	cfg grain.StateConfig
}

// entry is the directory entry that names this activation.
func (a *activation) entry() directory.Entry {
	return directory.Entry{SiloID: a.silo.id, Address: a.silo.addr, Incarnation: a.inc.id, ActivationID: a.seq}
}

// fenced reports whether the activation's incarnation is fenced: past its
// fence deadline or its lease lost. It stays true after the silo rejoins
// with a new incarnation.
func (a *activation) fenced() bool { return a.inc.member.Fenced() }

// grainContext views an activation as the grain.Context of its
// implementation.
type grainContext activation

var _ grain.Context = (*grainContext)(nil)

func (c *grainContext) act() *activation { return (*activation)(c) }

func (c *grainContext) ID() grain.ID { return c.id }

func (c *grainContext) SiloID() string { return c.silo.id }

func (c *grainContext) ActivationID() string { return c.act().activationID() }

// activationID is what grain.Context.ActivationID returns: the directory
// entry's identity of the activation, "silo/incarnation/seq".
func (a *activation) activationID() string {
	return a.silo.id + "/" + strconv.FormatInt(a.inc.id, 10) + "/" + strconv.FormatUint(a.seq, 10)
}

func (c *grainContext) Logger() *zap.Logger {
	a := c.act()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.logger == nil {
		// The silo's logger has the "silo" field.
		a.logger = a.silo.log.With(zap.Stringer("grain", a.id), zap.String("activation", a.activationID()))
	}
	return a.logger
}

func (c *grainContext) DeactivateOnIdle() {
	a := c.act()
	a.mu.Lock()
	if a.deactivate == 0 {
		a.deactivate = grain.DeactivateRequested
	}
	a.mu.Unlock()
}

func (c *grainContext) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	if c.act().fenced() {
		// A turn still running past its incarnation's fence: another
		// activation of this grain may exist, so it must not act.
		return nil, fmt.Errorf("%w: %s belongs to a fenced incarnation of silo %s", grain.ErrSiloUnavailable, c.id, c.silo.id)
	}
	return c.silo.Invoke(ctx, call)
}

func (c *grainContext) AttachState(name string, cfg grain.StateConfig, p grain.Persistent) grain.StateStore {
	a := c.act()
	st := a.silo.stateStore(a, name, cfg)
	switch cfg.Policy {
	case grain.WriteThrough:
		a.through = true
	case grain.WriteBehind:
		if cfg.MaxDelay <= 0 {
			st.err = fmt.Errorf("runtime: state %q of %s: WithWriteBehind needs a positive delay, got %v", name, a.id, cfg.MaxDelay)
		} else if a.behind == 0 || cfg.MaxDelay < a.behind {
			a.behind = cfg.MaxDelay
		}
	}
	a.states = append(a.states, attachedState{p: p, cfg: cfg})
	return st
}

// enqueue adds m to the mailbox. It returns errRetry if the activation is
// dead (the caller routes again) and ErrOverloaded if the mailbox is full.
// If no goroutine runs the activation, it starts one.
func (a *activation) enqueue(m *message) error {
	a.mu.Lock()
	switch {
	case a.status == statusDead:
		a.mu.Unlock()
		return errRetry
	case a.queue.len()+a.ready.len() >= a.typ.mailboxLimit:
		a.mu.Unlock()
		return fmt.Errorf("%w: %s has %d calls waiting", grain.ErrOverloaded, a.id, a.typ.mailboxLimit)
	}
	switch {
	case len(m.chain) > 0 && a.onChainLocked(m.chain):
		// The call waits for a turn that waits for it: admit it now, or
		// fail it instead of letting both wait for the deadline.
		if a.status != statusValid || !a.typ.callChainReentrant && !a.mayStartLocked(m) {
			err := a.deadlockError(m)
			a.mu.Unlock()
			return err
		}
		a.ready.push(m)
	case len(a.waiting) > 0 && !a.typ.reentrant && a.status == statusValid && a.mayStartLocked(m):
		// It may interleave with the waiting turns: it need not wait
		// behind calls that may not.
		a.ready.push(m)
	default:
		a.queue.push(m)
	}
	start := !a.running && a.status == statusValid && a.runnableLocked()
	if start {
		a.running = true
	}
	a.mu.Unlock()
	if start {
		a.silo.goTurns(a)
	}
	return nil
}

var errRetry = errors.New("runtime: activation gone, route again")

// activate runs in the goroutine that created the activation: register in
// the directory, build the implementation, load state, OnActivate, then
// serve the mailbox.
func (a *activation) activate() {
	s := a.silo
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeactivationTimeout)
	defer cancel()

	at := a.newTurn(ctx, "$activate", false, nil)
	ctx = at
	entry := a.entry()
	dir := a.directory() // none for a stateless worker
	winner, err := dir.Register(ctx, a.id, entry)
	if err != nil {
		a.fail(fmt.Errorf("%w: %s: register in directory: %w", grain.ErrActivationFailed, a.id, err), false)
		return
	}
	if winner != entry && winner.SiloID == s.id && winner.Incarnation == entry.Incarnation {
		// A stale entry of this silo (an unregister that failed): no
		// activation of ours holds it, since the table has only a. Remove
		// it and register again.
		if err := dir.Unregister(ctx, a.id, winner); err == nil {
			winner, err = dir.Register(ctx, a.id, entry)
			if err != nil {
				a.fail(fmt.Errorf("%w: %s: register in directory: %w", grain.ErrActivationFailed, a.id, err), false)
				return
			}
		}
	}
	if winner != entry {
		// Another activation won the race: hand our mailbox to it.
		s.table.remove(a)
		s.forwardPending(a.kill(), winner)
		return
	}
	err = a.build(ctx)
	a.endTurn(at)
	if err == nil && a.writeFailed != nil {
		// OnActivate wrote a state, the write failed and OnActivate went
		// on: serving would show a value storage may not hold.
		err = fmt.Errorf("OnActivate: %w", a.writeFailed)
	}
	if err != nil {
		a.fail(fmt.Errorf("%w: %s: %w", grain.ErrActivationFailed, a.id, err), true)
		return
	}
	a.mu.Lock()
	if a.status == statusDead {
		// Dropped meanwhile (fence, or Stop ran out of time): never serve.
		a.mu.Unlock()
		s.unregister(a)
		return
	}
	a.status = statusValid
	a.mu.Unlock()
	s.log.Debug("activated", zap.Stringer("grain", a.id))
	a.run()
}

// build creates the implementation, loads its declared states and runs
// OnActivate.
func (a *activation) build(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a.silo.log.Error("grain panicked during activation", zap.Stringer("grain", a.id),
				zap.Any("panic", r), zap.ByteString("stack", rtdebug.Stack()))
			err = fmt.Errorf("%w: during activation: %v", grain.ErrPanic, r)
		}
	}()
	a.impl = a.typ.factory((*grainContext)(a))
	if a.impl == nil {
		return errors.New("factory returned nil")
	}
	if _, ok := a.impl.(grain.Remindable); ok {
		a.remindable.Store(remindableYes)
	} else {
		a.remindable.Store(remindableNo)
	}
	for _, st := range a.states {
		if err := st.p.Reload(ctx); err != nil {
			return fmt.Errorf("load state: %w", err)
		}
	}
	if h, ok := a.impl.(grain.Activator); ok {
		if err := h.OnActivate(ctx); err != nil {
			return fmt.Errorf("OnActivate: %w", err)
		}
	}
	return nil
}

// fail tears down an activation that could not activate: every waiting call
// gets err, and the next call starts a new activation.
func (a *activation) fail(err error, registered bool) {
	s := a.silo
	s.log.Warn("activation failed", zap.Stringer("grain", a.id), zap.Error(err))
	if registered {
		s.unregister(a)
	}
	s.table.remove(a)
	for _, m := range a.kill() {
		m.complete(nil, err)
	}
}

// kill marks the activation dead and returns the messages it still held.
func (a *activation) kill() []*message {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = statusDead
	a.stopTimersLocked()
	// impl and states stay: a turn may still be running (the silo fenced
	// itself), and they belong to that goroutine, which keeps the token.
	return append(a.ready.drain(), a.queue.drain()...)
}

// run serves the mailbox one turn at a time until it is empty. The caller
// holds running.
func (a *activation) run() {
	for {
		a.mu.Lock()
		if a.status == statusDead || len(a.resumers) > 0 || a.failing && len(a.waiting) > 0 {
			// Dropped while this goroutine ran a turn, or failing: the
			// waiting turns still finish theirs; or a waiting turn's call
			// returned: it continues first.
			a.handOffAndUnlock()
			return
		}
		if a.failing {
			// The last waiting turn of a failed activation ended.
			a.mu.Unlock()
			a.deactivateNow(context.Background(), grain.DeactivateFailed)
			return
		}
		m := a.ready.pop()
		if m == nil && a.queue.head != nil && a.mayStartLocked(a.queue.head) {
			m = a.queue.pop()
		}
		if m != nil && !m.idle {
			a.counted = true
		}
		if m == nil {
			if len(a.waiting) == 0 {
				if a.counted {
					a.lastActive = a.silo.nanotime()
					a.counted = false
				}
				if reason := a.deactivate; reason != 0 && a.status == statusValid {
					a.status = statusDeactivating
					a.mu.Unlock()
					a.deactivateNow(a.silo.deactivationContext(reason), reason)
					return
				}
			}
			// Nothing may start: the waiting turns, if any, take the
			// token back when their calls return.
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		if failed := a.turn(m); failed {
			a.mu.Lock()
			if a.status == statusDead {
				a.handOffAndUnlock()
				return
			}
			a.status = statusDeactivating
			if len(a.waiting) > 0 || len(a.resumers) > 0 {
				// Other turns wait on calls they made: the activation
				// stays registered (no other may start) until they
				// finish, writing nothing, then it goes (see above).
				a.failing = true
				a.handOffAndUnlock()
				return
			}
			a.mu.Unlock()
			a.deactivateNow(context.Background(), grain.DeactivateFailed)
			return
		}
	}
}

// turn runs one call. It reports whether the activation must be torn down
// without writing state: a panic, a storage conflict that shows another
// activation wrote since this one read, or a state write that failed (see
// writeFailed).
func (a *activation) turn(m *message) (failed bool) {
	if m.sys != nil {
		return a.sysTurn(m)
	}
	if m.abandoned.Load() {
		// The caller gave up before the turn started: skip it. Its
		// message is not released; the caller may still hold it.
		return false
	}
	if err := m.ctx.Err(); err != nil {
		m.complete(nil, callError(m, err))
		return false
	}
	s := a.silo
	if a.fenced() {
		m.complete(nil, fmt.Errorf("%w: silo %s is fenced", grain.ErrSiloUnavailable, s.id))
		return false
	}
	if m.method.Name == grain.ReminderMethod && a.remindable.Load() != remindableYes {
		// A reminder registered before the type stopped implementing
		// Remindable: the tick did not run, and the reminder service
		// backs it off (see refusedTick).
		m.complete(nil, fmt.Errorf("%w: reminder tick for %s: grain type %s does not implement grain.Remindable",
			grain.ErrUnknownMethod, a.id, a.typ.desc.Name))
		return false
	}
	var t *turn
	if m.done == nil {
		// A message of its own (from another process, or one-way), never
		// reused: its turn lives in it, sparing an allocation. A pooled
		// message (a local call's) is reused once its caller has the
		// reply, while grain code might still hold the turn's context.
		t = a.initTurn(&m.tn, m.ctx, m.method.Name, m.method.Flags.Has(grain.ReadOnly), m.chain)
	} else {
		t = a.newTurn(m.ctx, m.method.Name, m.method.Flags.Has(grain.ReadOnly), m.chain)
	}
	reply, err, ran, panicked := a.invoke(t, m)
	failing := a.endTurn(t)
	if panicked {
		m.complete(nil, err)
		return true
	}
	if !ran {
		// An incoming filter answered the call without running it.
		if err == nil && reply != nil {
			reply, err = replyFor(m, reply, a.silo.cfg.MaxMessageSize)
		}
		m.complete(reply, err)
		return false
	}
	// The method ran: whatever it returns, even a runtime error of its own
	// call to another grain, says "ran and failed", unless a write it made
	// may have landed, or it returned its call's own timeout or
	// cancellation, which its caller sees as such, local or remote.
	if err != nil && m.ctx.Err() != nil && errors.Is(err, m.ctx.Err()) {
		err = callError(m, m.ctx.Err())
	} else {
		err = grain.WithOutcome(err, grain.OutcomeFailed)
	}
	if err != nil && a.writeFailed != nil && writeOutcome(a.writeFailed) == grain.OutcomeUnknown {
		err = grain.WithOutcome(err, grain.OutcomeUnknown)
	}
	if failing {
		// Another call of the activation failed while this one waited on
		// a call it made: the state it ran on is suspect, and nothing of
		// it is written.
		reply, err = nil, grain.WithOutcome(fmt.Errorf("runtime: %s.%s ran, but the activation was torn down while it waited on a call it made (another call of it failed); what it changed is not written",
			a.id, m.method.Name), grain.OutcomeFailed)
	} else if !m.method.Flags.Has(grain.ReadOnly) {
		if werr := a.afterTurn(); werr != nil {
			reply, err = nil, werr // marked with its outcome
		}
	}
	if err == nil && reply != nil {
		// A local caller gets a copy, a remote one the encoding, both
		// within the message size limit.
		reply, err = replyFor(m, reply, s.cfg.MaxMessageSize)
	}
	if a.fenced() {
		// The silo passed its fence deadline while the turn ran: another
		// activation may exist now, so a success must not be reported.
		reply, err = nil, fmt.Errorf("%w: silo %s was fenced during the call to %s.%s", grain.ErrOutcomeUnknown, s.id, a.id, m.method.Name)
	}
	m.complete(reply, err)
	return a.failedWrite() || a.conflict.Load()
}

// failedWrite reports, at the end of a turn, whether a state write or
// clear of the turn failed, in which case the activation must be torn down
// without writing, so the next call reloads from storage. It logs why.
// writeOutcome is the outcome of a call whose state write failed with err:
// ran and failed when storage surely did not apply it (a stale etag, a
// state it can never store, a write refused because the silo is fenced),
// unknown otherwise (a lost connection, a timeout: it may have landed).
func writeOutcome(err error) grain.Outcome {
	if errors.Is(err, grain.ErrConflict) || errors.Is(err, grain.ErrTooLarge) || errors.Is(err, grain.ErrSiloUnavailable) {
		return grain.OutcomeFailed
	}
	return grain.OutcomeUnknown
}

func (a *activation) failedWrite() bool {
	if a.writeFailed == nil {
		return false
	}
	a.silo.log.Warn("a state write failed; tearing the activation down so that the next call reloads its state from storage",
		zap.Stringer("grain", a.id), zap.Error(a.writeFailed))
	return true
}

func (a *activation) invoke(t *turn, m *message) (reply any, err error, ran, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			a.silo.log.Error("grain method panicked; deactivating without writing state",
				zap.Stringer("grain", a.id), zap.String("method", m.method.Name),
				zap.Any("panic", r), zap.ByteString("stack", rtdebug.Stack()))
			reply, panicked = nil, true
			err = fmt.Errorf("%w: %s.%s: %v", grain.ErrPanic, a.id, m.method.Name, r)
		}
	}()
	var ctx context.Context = t
	if m.done == nil && m.replyFn == nil {
		// One-way: the caller did not wait, so nothing bounds the turn but
		// the response timeout.
		var release func()
		ctx, release = transport.WithTimeout(ctx, a.silo.cfg.ResponseTimeout)
		defer release()
	}
	if len(a.typ.incoming) == 0 {
		reply, err = m.method.Invoke(ctx, a.impl, m.args)
		return reply, err, true, false
	}
	return a.invokeFiltered(ctx, m)
}

// invokeFiltered runs m's method through the incoming filters. (Apart from
// invoke, so that the flag the filters' last step sets does not move to
// the heap on every call.)
func (a *activation) invokeFiltered(ctx context.Context, m *message) (reply any, err error, ran, panicked bool) {
	called := false
	reply, err = grain.RunFilters(ctx, a.typ.incoming, &grain.CallInfo{Target: a.id, Method: m.method, Args: m.args},
		func(ctx context.Context) (any, error) {
			called = true
			return m.method.Invoke(ctx, a.impl, m.args)
		})
	return reply, err, called, false
}

// tryDeactivate starts deactivating an idle valid activation, if it is still
// idle for at least minIdle (in nanoseconds of the silo clock) and no
// goroutine runs it. It reports whether it did; the caller then runs
// deactivateNow.
func (a *activation) tryDeactivate(now, minIdle int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status != statusValid || a.running || a.queue.len() > 0 || a.ready.len() > 0 || len(a.waiting) > 0 ||
		len(a.resumers) > 0 || now-a.lastActive < minIdle {
		return false
	}
	a.status = statusDeactivating
	a.running = true
	return true
}

// deactivateNow runs OnDeactivate, writes changed state, unregisters the
// activation and routes any calls that arrived meanwhile to a new
// activation. The caller set status to deactivating and holds running.
// With reason DeactivateFailed, or on a fenced silo, neither OnDeactivate
// nor the state writes run: the in-memory state is suspect, or another
// activation may already own the grain.
//
// A state write that fails keeps the activation: it returns to service and
// the collector tries again after a backoff; the changes were never
// reported durable, so serving them meanwhile breaks no promise. A state
// the provider can never accept (ErrTooLarge) is not retried: the
// activation goes without it, logged as an error and counted (see
// Silo.DroppedUnwritten). When the silo is stopping, the writes are
// retried here, with backoff, until parent (Stop's deactivation time)
// ends; parent also bounds the directory unregistration.
func (a *activation) deactivateNow(parent context.Context, reason grain.DeactivationReason) {
	s := a.silo
	for reason != grain.DeactivateFailed && !a.fenced() && !a.conflict.Load() {
		ctx, cancel := context.WithTimeout(parent, s.cfg.DeactivationTimeout)
		err := a.persist(ctx, reason)
		cancel()
		if err == nil {
			a.accounted.Store(true)
			break
		}
		a.writeFailures++
		if errors.Is(err, grain.ErrTooLarge) {
			// Retrying cannot help, and keeping the activation would keep
			// it for ever (and hold Stop up to its bound).
			a.lost("a state can never be written: the storage provider rejects its size (deactivation: "+reason.String()+")", err)
			break
		}
		if a.conflict.Load() || errors.Is(err, grain.ErrPanic) || a.fenced() {
			s.log.Error("writing state on deactivation failed; state changes are lost",
				zap.Stringer("grain", a.id), zap.Stringer("reason", reason), zap.Error(err))
			break
		}
		delay := backoff(a.writeFailures, 0)
		if reason != grain.DeactivateSiloStopping {
			s.log.Error("writing state on deactivation failed; keeping the activation to retry",
				zap.Stringer("grain", a.id), zap.Int("failures", a.writeFailures), zap.Duration("retry_in", delay), zap.Error(err))
			a.keepForRetry(delay)
			return
		}
		s.log.Error("writing state at shutdown failed; retrying until the shutdown deadline",
			zap.Stringer("grain", a.id), zap.Int("failures", a.writeFailures), zap.Duration("retry_in", delay), zap.Error(err))
		if !sleepCtx(parent, delay) {
			a.lost("stop's deactivation time ran out before its state was written", err)
			break
		}
	}
	s.unregisterWithin(parent, a)
	s.table.remove(a)
	pending := a.kill()
	// Turns that still wait (a failed turn tore the activation down while
	// they waited on calls) take the token to finish theirs.
	a.releaseToken()
	s.log.Debug("deactivated", zap.Stringer("grain", a.id), zap.Stringer("reason", reason))
	for _, m := range pending {
		s.redispatch(m)
	}
}

// lost records, once per activation, that it goes without its state
// written (why, and the error that kept it from being written): an error
// log naming the grain, for the first lostLogLimit activations of the
// silo, and DroppedUnwritten.
func (a *activation) lost(why string, err error) {
	if a.accounted.Swap(true) {
		return
	}
	s := a.silo
	switch n := s.droppedUnwritten.Add(1); {
	case n <= lostLogLimit:
		s.log.Error("activation dropped without writing its state; its changes since its last write, if any, are lost",
			zap.Stringer("grain", a.id), zap.String("why", why), zap.Error(err))
	case n == lostLogLimit+1:
		s.log.Error("more activations dropped without writing their state; no longer logged one by one, see Silo.DroppedUnwritten",
			zap.Int("logged", lostLogLimit))
	}
}

// lostLogLimit bounds the per-grain logs of lost.
const lostLogLimit = 100

// sleepCtx waits d, or until ctx ends; it reports whether it waited d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// keepForRetry returns a deactivating activation to service after its state
// failed to write; the collector tries again once it has been idle for
// delay (it wakes for that, whatever its quantum).
func (a *activation) keepForRetry(delay time.Duration) {
	s := a.silo
	a.mu.Lock()
	if a.status == statusDead {
		a.mu.Unlock()
		return
	}
	a.status = statusValid
	a.deactivate = 0
	a.writeFailed = nil // not promised durable: kept, and written later
	a.lastActive = s.nanotime() - int64(a.typ.collectionAge) + int64(min(delay, a.typ.collectionAge))
	start := a.queue.len() > 0
	a.running = start
	a.mu.Unlock()
	s.collectAfter(min(delay, a.typ.collectionAge))
	if start {
		s.goTurns(a)
	}
}

// persist runs OnDeactivate and writes every state that changed.
func (a *activation) persist(ctx context.Context, reason grain.DeactivationReason) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s := a.silo
			s.log.Error("grain panicked during deactivation", zap.Stringer("grain", a.id),
				zap.Any("panic", r), zap.ByteString("stack", rtdebug.Stack()))
			err = fmt.Errorf("%w: during deactivation: %v", grain.ErrPanic, r)
		}
	}()
	dt := a.newTurn(ctx, "$deactivate", false, nil)
	ctx = dt
	if h, ok := a.impl.(grain.Deactivator); ok {
		err := h.OnDeactivate(ctx, reason)
		a.endTurn(dt)
		if err != nil {
			a.silo.log.Warn("OnDeactivate failed", zap.Stringer("grain", a.id), zap.Error(err))
		}
	}
	var errs []error
	for _, st := range a.states {
		if _, err := st.p.WriteIfChanged(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
