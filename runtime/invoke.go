package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

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
		return nil, s.invokeOneWay(ctx, call.Target, t, md, args)
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
		return reply, err
	case <-ctx.Done():
		m.abandoned.Store(true)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, grain.Timeout(call.Target.String() + "." + md.Name)
		}
		return nil, fmt.Errorf("runtime: call %s.%s: %w", call.Target, md.Name, ctx.Err())
	}
}

// invokeOneWay queues a one-way call and returns without waiting for it.
// Its turn runs with the caller's context values but not its cancellation,
// bounded by the response timeout.
func (s *Silo) invokeOneWay(ctx context.Context, id grain.ID, t *grainType, md *grain.MethodDesc, args any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ResponseTimeout)
	m := &message{ctx: ctx, target: id, typ: t, method: md, args: args, done: make(chan struct{}, 1)}
	if err := s.dispatch(m); err != nil {
		cancel()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		select {
		case <-m.done:
			if m.err != nil {
				s.log.Debug("one-way call failed", zap.Stringer("grain", id), zap.String("method", md.Name), zap.Error(m.err))
			}
		case <-ctx.Done():
			m.abandoned.Store(true)
		}
	}()
	return nil
}

// dispatch routes m to the activation that must serve it: the local one, a
// new local one, or another silo's (through the directory cache). It does
// not wait for the turn. An error means m was not queued.
func (s *Silo) dispatch(m *message) error {
	for range maxForwards {
		if s.fenced.Load() {
			return fmt.Errorf("%w: silo %s is fenced", grain.ErrSiloUnavailable, s.id)
		}
		a := s.table.get(m.target)
		if a == nil {
			if e, ok := s.cachedRemote(m.target); ok {
				if _, live := localSilos.Load(e.SiloID); live {
					return s.forward(m, e)
				}
				// The cached host left: forget it and let the directory
				// settle who hosts the grain now.
				s.dir.Invalidate(m.target)
			}
			if s.stopping.Load() {
				return fmt.Errorf("%w: silo %s is stopping", grain.ErrSiloUnavailable, s.id)
			}
			var created bool
			a, created = s.table.getOrCreate(m.target, func() *activation { return s.newActivation(m.target, m.typ) })
			if created {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					a.activate()
				}()
			}
		}
		switch err := a.enqueue(m); {
		case err == nil:
			return nil
		case !errors.Is(err, errRetry):
			return err
		}
	}
	return fmt.Errorf("runtime: call to %s re-routed %d times without reaching an activation", m.target, maxForwards)
}

// redispatch routes a message again after the activation holding it went
// away, failing it if it cannot be queued.
func (s *Silo) redispatch(m *message) {
	m.forwards++
	if m.forwards > maxForwards {
		m.complete(nil, fmt.Errorf("runtime: call to %s re-routed %d times without reaching an activation", m.target, maxForwards))
		return
	}
	if err := s.dispatch(m); err != nil {
		m.complete(nil, err)
	}
}

func (s *Silo) newActivation(id grain.ID, t *grainType) *activation {
	return &activation{silo: s, typ: t, id: id, seq: s.nextActivation.Add(1), running: true}
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

// forward hands m to the silo that hosts its grain.
func (s *Silo) forward(m *message, e directory.Entry) error {
	m.forwards++
	if m.forwards > maxForwards {
		return fmt.Errorf("runtime: call to %s forwarded %d times without reaching an activation", m.target, maxForwards)
	}
	peer, ok := localSilos.Load(e.SiloID)
	if !ok {
		// The entry may be stale (the silo left); forget it so the next
		// call re-resolves.
		s.dir.Invalidate(m.target)
		return fmt.Errorf("%w: %s is hosted by silo %s, which is not reachable from this process",
			grain.ErrSiloUnavailable, m.target, e.SiloID)
	}
	return peer.(*Silo).dispatch(m)
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
