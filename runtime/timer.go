package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	rtdebug "runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
)

// A system turn runs runtime work (a timer callback, a write-behind flush)
// in an activation's mailbox order, so that it never overlaps a call. Its
// message has sys set and no method.

// newSysMessage returns a message whose turn runs fn. idle says the turn
// does not count as activity for idle collection.
func (a *activation) newSysMessage(fn func(ctx context.Context), idle bool) *message {
	return &message{ctx: context.Background(), target: a.id, typ: a.typ, sys: fn, idle: idle}
}

// sysTurn runs a system turn. It reports whether the activation must be
// torn down without writing state (the callback panicked, or a write met a
// stale etag).
func (a *activation) sysTurn(m *message) (failed bool) {
	if a.fenced() {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			a.silo.log.Error("grain timer or runtime turn panicked; deactivating without writing state",
				zap.Stringer("grain", a.id), zap.Any("panic", r), zap.ByteString("stack", rtdebug.Stack()))
			failed = true
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), a.silo.cfg.ResponseTimeout)
	defer cancel()
	tt := a.newTurn(ctx, "$timer", false, nil)
	defer a.endTurn(tt) // before the recover above, on a panic too
	m.sys(tt)
	return a.failedWrite() || a.conflict.Load()
}

// grainTimer is a timer registered through grain.Context.RegisterTimer.
// Its time.Timer exists only while it is scheduled; each firing queues a
// system turn that runs the callback and then schedules the next firing,
// so the period runs from the end of a callback.
type grainTimer struct {
	a      *activation
	fn     func(ctx context.Context)
	period time.Duration
	idle   bool // !KeepAlive

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (c *grainContext) RegisterTimer(due, period time.Duration, fn func(ctx context.Context), opts ...grain.TimerOption) grain.Timer {
	a := c.act()
	cfg := grain.NewTimerConfig(opts...)
	t := &grainTimer{a: a, fn: fn, period: max(period, 0), idle: !cfg.KeepAlive}
	a.mu.Lock()
	if a.status == statusDead {
		a.mu.Unlock()
		t.stopped = true
		return t
	}
	if a.timers == nil {
		a.timers = make(map[*grainTimer]struct{})
	}
	a.timers[t] = struct{}{}
	a.mu.Unlock()
	t.schedule(max(due, 0))
	return t
}

func (t *grainTimer) schedule(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if t.t == nil {
		t.t = time.AfterFunc(d, t.fire)
	} else {
		t.t.Reset(d)
	}
}

// fire queues the callback's turn.
func (t *grainTimer) fire() {
	t.mu.Lock()
	stopped := t.stopped
	t.mu.Unlock()
	if stopped {
		return
	}
	switch err := t.a.enqueue(t.a.newSysMessage(t.run, t.idle)); {
	case err == nil:
	case errors.Is(err, errRetry): // the activation is gone
		t.Stop()
	default: // mailbox full: skip this tick
		t.a.silo.log.Warn("timer tick skipped", zap.Stringer("grain", t.a.id), zap.Error(err))
		t.next()
	}
}

// run is the timer's turn.
func (t *grainTimer) run(ctx context.Context) {
	t.mu.Lock()
	stopped := t.stopped
	t.mu.Unlock()
	if stopped {
		return
	}
	defer t.next()
	t.fn(ctx)
	// What the callback changed is written by the states' policies, as
	// after a call; nobody waits for a write-through error, so it is
	// logged (by afterTurn).
	_ = t.a.afterTurn()
}

// next schedules the next firing, or ends a one-shot timer.
func (t *grainTimer) next() {
	if t.period == 0 {
		t.Stop()
		return
	}
	t.schedule(t.period)
}

// Stop cancels the timer.
func (t *grainTimer) Stop() {
	if !t.halt() {
		return
	}
	a := t.a
	a.mu.Lock()
	delete(a.timers, t)
	a.mu.Unlock()
}

// halt marks the timer stopped and stops its time.Timer; it reports
// whether the timer was running.
func (t *grainTimer) halt() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.stopped = true
	if t.t != nil {
		t.t.Stop()
	}
	return true
}

// stopTimersLocked stops every timer of the activation and its
// write-behind flush. The caller holds a.mu.
func (a *activation) stopTimersLocked() {
	for t := range a.timers {
		t.halt()
	}
	a.timers = nil
	if a.flushTimer != nil {
		a.flushTimer.Stop()
	}
}

// afterTurn applies the write policies of the activation's states after a
// call that may have changed them: write-through states are written now
// (the error fails the call), a write-behind flush is scheduled.
func (a *activation) afterTurn() error {
	if !a.through && a.behind == 0 {
		return nil
	}
	if a.fenced() {
		if a.through {
			// Never reported as written: the turn fails.
			return grain.WithOutcome(fmt.Errorf("%w: silo %s is fenced; write-through state of %s not written",
				grain.ErrSiloUnavailable, a.silo.id, a.id), grain.OutcomeFailed)
		}
		return nil
	}
	if a.through && a.writeFailed != nil {
		// A write of this turn failed: the activation is torn down after
		// it, and writing its states now could persist the change the
		// failed write's caller was told about, or overwrite one that
		// landed. The turn fails, as unknown as that write.
		return grain.WithOutcome(fmt.Errorf("runtime: %s: write-through skipped after a failed write: %w", a.id, a.writeFailed),
			writeOutcome(a.writeFailed))
	}
	if a.behind > 0 && !a.flushArmed {
		a.armFlush(a.behind)
	}
	if !a.through {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.silo.cfg.DeactivationTimeout)
	defer cancel()
	var errs []error
	outcome := grain.OutcomeFailed
	for _, st := range a.states {
		if st.cfg.Policy != grain.WriteThrough {
			continue
		}
		if _, err := st.p.WriteIfChanged(ctx); err != nil {
			a.silo.log.Warn("write-through failed", zap.Stringer("grain", a.id), zap.Error(err))
			errs = append(errs, err)
			if writeOutcome(err) == grain.OutcomeUnknown {
				outcome = grain.OutcomeUnknown // one that may have landed is enough
			}
		}
	}
	if len(errs) > 0 {
		return grain.WithOutcome(fmt.Errorf("runtime: %s: the call ran but its state was not written: %w", a.id, errors.Join(errs...)), outcome)
	}
	return nil
}

// armFlush schedules a write-behind flush turn after d. Called from turns.
func (a *activation) armFlush(d time.Duration) {
	a.flushArmed = true
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == statusDead {
		return
	}
	if a.flushTimer == nil {
		a.flushTimer = time.AfterFunc(d, a.queueFlush)
	} else {
		a.flushTimer.Reset(d)
	}
}

// queueFlush queues the flush turn; if the mailbox is full it tries again
// a little later.
func (a *activation) queueFlush() {
	switch err := a.enqueue(a.newSysMessage(a.flush, true)); {
	case err == nil, errors.Is(err, errRetry):
	default:
		a.mu.Lock()
		if a.status != statusDead && a.flushTimer != nil {
			a.flushTimer.Reset(a.behind)
		}
		a.mu.Unlock()
	}
}

// flush is the write-behind turn: write every write-behind state that
// changed. A failure is logged and retried with backoff; the changes stay
// in memory (and are written on deactivation at the latest): write-behind
// never promised them durable. (If a failed write did land, the next one
// meets a stale etag and the activation is torn down.) A state the
// provider can never accept (ErrTooLarge) is not retried: the activation
// is torn down without writing, its unwritten changes lost and counted.
func (a *activation) flush(ctx context.Context) {
	a.flushArmed = false
	var errs []error
	for _, st := range a.states {
		if st.cfg.Policy != grain.WriteBehind {
			continue
		}
		if _, err := st.p.WriteIfChanged(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		a.flushFailures = 0
		return
	}
	if a.conflict.Load() {
		return // torn down after this turn
	}
	if err := errors.Join(errs...); errors.Is(err, grain.ErrTooLarge) {
		a.lost("a write-behind state can never be written: the storage provider rejects its size", err)
		return // writeFailed is set: torn down after this turn
	}
	a.writeFailed = nil // kept in memory and retried
	a.flushFailures++
	d := backoff(a.flushFailures, a.behind)
	a.silo.log.Error("write-behind failed; retrying", zap.Stringer("grain", a.id),
		zap.Int("failures", a.flushFailures), zap.Duration("retry_in", d), zap.Error(errors.Join(errs...)))
	a.armFlush(d)
}

// backoff is the delay before retry n (1-based) of a failed storage write:
// exponential from 100ms, at most limit (and at most 10 s), with jitter.
func backoff(n int, limit time.Duration) time.Duration {
	if limit <= 0 || limit > 10*time.Second {
		limit = 10 * time.Second
	}
	d := 100 * time.Millisecond << min(n-1, 16)
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}
