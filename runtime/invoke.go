package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// maxForwards bounds how often one call is re-routed (lost directory race,
// deactivation while queued) before it fails.
const maxForwards = 8

var _ grain.Caller = (*Silo)(nil)

// Invoke implements grain.Caller: it delivers call to the grain's single
// activation, activating it on this silo if it has none, and waits for the
// reply until ctx's deadline (or the silo's response timeout).
func (s *Silo) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	if !s.serving.Load() {
		return nil, fmt.Errorf("%w: silo is not started", grain.ErrSiloUnavailable)
	}
	t := s.types[call.Target.Type]
	if t == nil {
		return nil, fmt.Errorf("%w: %q (calling %s)", grain.ErrUnknownGrainType, call.Target.Type, call.Target)
	}
	md, err := t.desc.Method(call.Method)
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no method %d", err, call.Target.Type, call.Method)
	}
	args := call.Args
	if !md.Flags.Has(grain.CopyFree) {
		if args, err = deepCopy(args, md.NewArgs); err != nil {
			return nil, fmt.Errorf("%w: %s.%s: %w", grain.ErrBadRequest, call.Target, md.Name, err)
		}
	}
	if md.Flags.Has(grain.OneWay) {
		// The caller does not wait: the turn keeps the caller's values but
		// not its cancellation, and is bounded by the response timeout.
		m := &message{ctx: context.WithoutCancel(ctx), target: call.Target, typ: t, method: md, args: args}
		return nil, s.dispatch(m)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ResponseTimeout)
		defer cancel()
	}
	m := newMessage(ctx, call.Target, t, md, args)
	if err := s.dispatch(m); err != nil {
		m.release()
		return nil, err
	}
	select {
	case <-m.done:
		reply, err := m.reply, m.err
		m.release()
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// The grain returned its context's error: report it as the
			// call's own timeout or cancellation.
			err = callError(m, ctx.Err())
		}
		return reply, err
	case <-ctx.Done():
		m.abandoned.Store(true)
		return nil, callError(m, ctx.Err())
	}
}

// callError is the error of a call whose context ended with err.
func callError(m *message, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return grain.Timeout(m.target.String() + "." + m.method.Name)
	}
	return fmt.Errorf("runtime: call %s.%s: %w", m.target, m.method.Name, err)
}

// errNotHere is what a silo answers for a grain it does not host when it
// cannot host it either (stopping, fenced): the sender drops its cached
// entry and routes again.
var errNotHere = fmt.Errorf("%w: grain not hosted here", grain.ErrSiloUnavailable)

// dispatch routes m to the activation that must serve it: the local one, a
// new local one, or another silo's (through the directory cache). It does
// not wait for the turn. An error means m was not queued.
func (s *Silo) dispatch(m *message) error {
	for range maxForwards {
		if s.isFenced() {
			return fmt.Errorf("%w: silo %s is fenced", errNotHere, s.id)
		}
		a := s.table.get(m.target)
		if a == nil {
			if e, ok := s.cachedRemote(m.target); ok {
				switch err := s.forward(m, e); {
				case err == nil:
					return nil
				case !errors.Is(err, errNotHere):
					return err
				}
				// The cached host is gone or no longer hosts the grain:
				// forget it and let the directory settle who does.
				s.dir.Invalidate(m.target)
			}
			var err error
			if a, err = s.activationFor(m); err != nil {
				return err
			}
		}
		switch err := a.enqueue(m); {
		case err == nil:
			return nil
		case !errors.Is(err, errRetry):
			return err
		}
	}
	return fmt.Errorf("%w: call to %s re-routed %d times without reaching an activation",
		grain.ErrSiloUnavailable, m.target, maxForwards)
}

// activationFor returns the local activation for m's grain, creating (and
// starting to activate) one if there is none.
func (s *Silo) activationFor(m *message) (*activation, error) {
	s.admit.RLock()
	defer s.admit.RUnlock()
	if s.stopping.Load() {
		return nil, fmt.Errorf("%w: silo %s is stopping", errNotHere, s.id)
	}
	a, created := s.table.getOrCreate(m.target, func() *activation {
		return &activation{silo: s, typ: m.typ, id: m.target, seq: s.nextActivation.Add(1), running: true}
	})
	if created {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			a.activate()
		}()
	}
	return a, nil
}

// redispatch routes a message again after the activation holding it went
// away, failing it if it cannot be queued.
func (s *Silo) redispatch(m *message) {
	m.forwards++
	if m.forwards > maxForwards {
		m.complete(nil, fmt.Errorf("%w: call to %s re-routed %d times without reaching an activation",
			grain.ErrSiloUnavailable, m.target, maxForwards))
		return
	}
	if err := s.dispatch(m); err != nil {
		m.complete(nil, err)
	}
}

// cachedRemote returns the directory entry for id if the directory has it
// cached and it names another silo. It never goes to etcd: an uncached
// grain is activated here and the directory's register-if-absent settles
// who hosts it.
func (s *Silo) cachedRemote(id grain.ID) (directory.Entry, bool) {
	c, ok := s.dir.(directory.Cacher)
	if !ok {
		return directory.Entry{}, false
	}
	e, ok := c.Cached(id)
	if !ok || e.SiloID == s.id {
		return directory.Entry{}, false
	}
	return e, true
}

// forward hands m to the silo that hosts its grain according to e. It
// returns an error wrapping errNotHere if that silo is gone (or is another
// incarnation) or no longer hosts the grain and cannot host it.
func (s *Silo) forward(m *message, e directory.Entry) error {
	m.forwards++
	if m.forwards > maxForwards {
		return fmt.Errorf("%w: call to %s forwarded %d times without reaching an activation",
			grain.ErrSiloUnavailable, m.target, maxForwards)
	}
	v, ok := localSilos.Load(e.SiloID)
	if !ok || v.(*Silo).incarnation != e.Incarnation {
		return fmt.Errorf("%w: %s is registered on silo %s (incarnation %d), which is not reachable from this process",
			errNotHere, m.target, e.SiloID, e.Incarnation)
	}
	return v.(*Silo).dispatch(m)
}

// localSilos holds the silos running in this process, by id, so that silos
// sharing a process (tests, single-binary deployments) can hand calls to
// each other. The cross-process transport replaces it for remote silos.
var localSilos sync.Map

// forwardPending hands every message of a registration loser to the winner.
func (s *Silo) forwardPending(msgs []*message, winner directory.Entry) {
	for _, m := range msgs {
		if err := s.forward(m, winner); err != nil {
			m.complete(nil, err)
		}
	}
}
