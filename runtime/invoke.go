package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// maxForwards bounds how often one call is re-queued on this silo (a
// deactivation while it waited) before it fails.
const maxForwards = 8

var _ grain.Caller = (*Silo)(nil)

// Invoke implements grain.Caller: it delivers call to the grain's single
// activation, on this silo or another, activating it where placement says
// if it has none, and waits for the reply until ctx's deadline (or the
// silo's response timeout). The call passes through
// Config.OutgoingFilters first.
func (s *Silo) Invoke(ctx context.Context, call *grain.Call) (any, error) {
	if len(s.cfg.OutgoingFilters) == 0 || call.Method == nil {
		return s.invoke(ctx, call)
	}
	return grain.RunFilters(ctx, s.cfg.OutgoingFilters, &grain.CallInfo{Target: call.Target, Method: call.Method, Args: call.Args},
		func(ctx context.Context) (any, error) { return s.invoke(ctx, call) })
}

func (s *Silo) invoke(ctx context.Context, call *grain.Call) (any, error) {
	if !s.serving.Load() {
		return nil, fmt.Errorf("%w: silo is not serving (not started, or stopped)", grain.ErrSiloUnavailable)
	}
	t := s.types[call.Target.Type]
	desc := call.Type
	if t != nil {
		desc = t.desc
	}
	if desc == nil || desc.Name != call.Target.Type {
		return nil, fmt.Errorf("%w: %q (calling %s)", grain.ErrUnknownGrainType, call.Target.Type, call.Target)
	}
	md := call.Method
	if md == nil {
		return nil, fmt.Errorf("%w: call to %s names no method", grain.ErrUnknownMethod, call.Target)
	}
	if err := checkRequestValues(ctx, call, md); err != nil {
		return nil, err
	}
	if t := turnOf(ctx); t != nil && !md.Flags.Has(grain.OneWay) {
		// A turn calls another grain: it gives up its activation's turn
		// token while it waits (see turn.go).
		t.a.beginWait(t)
		defer t.a.endWait(t)
	}
	if t != nil && (call.Type != t.desc || t.desc.Lookup(md.Name) != md) {
		// The caller knows this type from another descriptor than the one
		// this silo hosts (another version of the interface linked into
		// the same process): resolve the method by wire identity, and
		// move arguments and reply between the two sets of Go types as
		// the wire would.
		return s.invokeForeign(ctx, call, t)
	}
	_, hasDeadline := ctx.Deadline()
	needDeadline := !hasDeadline && !md.Flags.Has(grain.OneWay)
	// The common case: the grain is active here (or is a stateless worker
	// of a type hosted here), and the caller waits on the context's Done,
	// so a plain timer context is the cheapest.
	if t != nil && (t.workers > 0 || s.table.get(call.Target) != nil) {
		lctx := ctx
		if needDeadline {
			var cancel context.CancelFunc
			lctx, cancel = context.WithTimeout(ctx, s.cfg.ResponseTimeout)
			defer cancel()
		}
		reply, err := s.invokeLocal(lctx, call, t, md)
		if _, notHere := redirectOf(err); !notHere {
			return reply, err
		}
	}
	if needDeadline {
		// No timer unless something waits on Done: the transport enforces
		// the deadline of remote calls itself.
		var release func()
		ctx, release = transport.WithTimeout(ctx, s.cfg.ResponseTimeout)
		defer release()
	}
	placement := s.unhostedPlacement(call.Target.Type)
	if t != nil {
		placement = t.placement
	}
	inc := s.inc.Load()
	hosted := t != nil && !s.stopping.Load()
	pick := func() (route, error) { return inc.router.resolve(ctx, call.Target, placement, hosted) }
	if t == nil && placement != placeWorker {
		// This silo does not know the type's placement: a silo that
		// hosts the type places a new grain (placement.go).
		pick = func() (route, error) { return inc.router.resolveUnhosted(ctx, call.Target) }
	}
	return inc.router.invoke(ctx, call, md, pick,
		func() (any, error) {
			if t == nil {
				return nil, fmt.Errorf("%w: %q is not hosted by silo %s", grain.ErrUnknownGrainType, call.Target.Type, s.id)
			}
			return s.invokeLocal(ctx, call, t, md)
		})
}

// invokeForeign runs a call made with another descriptor of t's grain type
// than t's: it is dispatched by name and fingerprint to t's method, never
// to another, and its arguments and reply make a msgpack round trip
// between the caller's types and the silo's.
func (s *Silo) invokeForeign(ctx context.Context, call *grain.Call, t *grainType) (any, error) {
	cm := call.Method
	md, err := t.desc.Resolve(cm.Name, cm.Fingerprint)
	if err != nil {
		return nil, callerSignature(call.Target, cm, fmt.Errorf("%w (silo %s)", err, s.id))
	}
	limit := s.cfg.MaxMessageSize
	args, err := deepCopy(call.Args, md.NewArgs, limit)
	if se, ok := err.(*sizeError); ok {
		return nil, tooLarge(call.Target, md, "arguments", se.n, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s.%s: arguments: %w", grain.ErrBadRequest, call.Target, md.Name, err)
	}
	reply, err := s.invoke(ctx, &grain.Call{Target: call.Target, Type: t.desc, Method: md, Args: args})
	if err != nil || reply == nil || cm.NewReply == nil {
		return nil, err
	}
	out, err := deepCopy(reply, cm.NewReply, limit)
	if se, ok := err.(*sizeError); ok {
		return nil, tooLarge(call.Target, md, "reply", se.n, limit)
	}
	if err != nil {
		return nil, grain.WithOutcome(fmt.Errorf("%w: %s.%s: reply: %w", grain.ErrBadRequest, call.Target, md.Name, err), grain.OutcomeUnknown)
	}
	return out, nil
}

// callerSignature adds the caller's signature of method m to err if it is
// grain.ErrIncompatible, whose message names the silo's.
func callerSignature(target grain.ID, m *grain.MethodDesc, err error) error {
	if errors.Is(err, grain.ErrIncompatible) {
		return fmt.Errorf("runtime: call %s.%s as %s (fingerprint %016x): %w", target, m.Name, m, m.Fingerprint, err)
	}
	return err
}

// invokeLocal runs call on this silo's activation of its grain.
func (s *Silo) invokeLocal(ctx context.Context, call *grain.Call, t *grainType, md *grain.MethodDesc) (any, error) {
	args, err := copyArgs(call, md, s.cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	if md.Flags.Has(grain.OneWay) {
		// The caller does not wait: the turn keeps the caller's values but
		// not its cancellation, and is bounded by the response timeout.
		m := &message{ctx: context.WithoutCancel(ctx), target: call.Target, typ: t, method: md,
			args: args, oneWayFailed: s.rerouteOneWay}
		return nil, s.dispatch(m)
	}
	chain, err := outChain(ctx)
	if err != nil {
		return nil, err
	}
	m := newMessage(ctx, call.Target, t, md, args)
	m.chain = chain
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
	return callErrorFor(&grain.Call{Target: m.target}, m.method, err)
}

func callErrorFor(call *grain.Call, md *grain.MethodDesc, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return grain.Timeout(call.Target.String() + "." + md.Name)
	}
	return fmt.Errorf("runtime: call %s.%s: %w", call.Target, md.Name, err)
}

// dispatch queues m on this silo's activation of its grain, creating the
// activation if there is none. It does not wait for the turn. An error
// means m was not queued.
func (s *Silo) dispatch(m *message) error { return s.dispatchTo(m, nil) }

// dispatchTo is dispatch with the activation the caller just looked up,
// if any, to spare a second lookup.
func (s *Silo) dispatchTo(m *message, a *activation) error {
	if m.typ.workers > 0 {
		return s.dispatchWorker(m)
	}
	for range maxForwards {
		if s.isFenced() {
			return &notHereError{id: m.target, why: "silo " + s.id + " is fenced"}
		}
		if a == nil {
			a = s.table.get(m.target)
		}
		if a != nil && a.inc != s.inc.Load() {
			// Left over from an incarnation that was fenced (created just
			// as the fence fell): it can never serve. Replace it.
			s.table.remove(a)
			for _, p := range a.kill() {
				p.complete(nil, &notHereError{id: p.target, why: "activation of a fenced incarnation"})
			}
			a = nil
			continue
		}
		if a == nil {
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
		a = nil
	}
	return fmt.Errorf("%w: call to %s re-queued %d times without reaching an activation",
		grain.ErrSiloUnavailable, m.target, maxForwards)
}

// activationFor returns the local activation for m's grain, creating (and
// starting to activate) one if there is none.
func (s *Silo) activationFor(m *message) (*activation, error) {
	s.admit.RLock()
	defer s.admit.RUnlock()
	if s.stopping.Load() {
		return nil, &notHereError{id: m.target, why: "silo " + s.id + " is stopping"}
	}
	a, created := s.table.getOrCreate(m.target, func() *activation {
		return &activation{silo: s, typ: m.typ, id: m.target, seq: s.nextActivation.Add(1), inc: s.inc.Load(), running: true}
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

// redispatch queues a message again after the activation holding it went
// away, failing it if it cannot be queued.
func (s *Silo) redispatch(m *message) {
	if m.sys != nil {
		return // a system turn belongs to the activation that went away
	}
	m.forwards++
	if m.forwards > maxForwards {
		m.complete(nil, fmt.Errorf("%w: call to %s re-queued %d times without reaching an activation",
			grain.ErrSiloUnavailable, m.target, maxForwards))
		return
	}
	if err := s.dispatch(m); err != nil {
		m.complete(nil, err)
	}
}

// forwardPending answers every call held by an activation that lost the
// directory race: not here, try the winner. Callers route again.
func (s *Silo) forwardPending(msgs []*message, winner directory.Entry) {
	var err error = &notHereError{id: msgs0(msgs), why: "another activation is registered",
		redirect: transport.Redirect{SiloID: winner.SiloID, Address: winner.Address}}
	if winner.SiloID == s.id {
		// Our own stale entry that could not be removed: sending callers
		// back here would only loop.
		err = fmt.Errorf("%w: a stale directory entry of this silo could not be removed; retry later", grain.ErrSiloUnavailable)
	}
	for _, m := range msgs {
		m.complete(nil, err)
	}
}

func msgs0(msgs []*message) grain.ID {
	if len(msgs) == 0 {
		return grain.ID{}
	}
	return msgs[0].target
}

// routedReply answers a call that held a routing token, and gives the
// token back.
type routedReply struct {
	transport.Replier
	routing chan struct{}
	once    sync.Once
}

func (r *routedReply) Reply(resp *transport.Envelope) {
	r.once.Do(func() { <-r.routing })
	r.Replier.Reply(resp)
}

// rerouteOneWay delivers a one-way call that could not be delivered here to
// where the not-here answer points, or routes it afresh: nobody waits for
// its outcome, so the silo forwards it instead of answering.
func (s *Silo) rerouteOneWay(m *message, err error) {
	m.forwards++
	if m.forwards > maxForwards || !s.serving.Load() {
		s.log.Warn("one-way call dropped", zap.Stringer("grain", m.target), zap.String("method", m.method.Name), zap.Error(err))
		return
	}
	rd, _ := redirectOf(err)
	select {
	case s.routing <- struct{}{}:
	default:
		s.warnDropped("one-way call dropped: too many calls being routed", zap.Stringer("grain", m.target),
			zap.String("method", m.method.Name), zap.Int("max_routing", cap(s.routing)))
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.routing }()
		ctx, cancel := context.WithTimeout(m.ctx, s.cfg.ResponseTimeout)
		defer cancel()
		inc := s.inc.Load()
		call := &grain.Call{Target: m.target, Type: m.typ.desc, Method: m.method, Args: m.args}
		pick := func() (route, error) {
			if rd.SiloID != "" && rd.SiloID != s.id {
				return inc.router.redirected(rd), nil
			}
			return inc.router.resolve(ctx, m.target, m.typ.placement, !s.stopping.Load())
		}
		_, err := inc.router.invoke(ctx, call, m.method, pick, func() (any, error) {
			// m.ctx has no cancellation; the turn bounds itself.
			return nil, s.dispatch(m)
		})
		if err != nil {
			s.warnDropped("one-way call dropped", zap.Stringer("grain", m.target), zap.String("method", m.method.Name), zap.Error(err))
		}
	}()
}

// warnDropped logs a dropped one-way call, at most once a second: a flood
// of them must not turn into a flood of logs.
func (s *Silo) warnDropped(msg string, fields ...zap.Field) {
	now, last := s.nanotime(), s.dropLogAt.Load()
	if last != 0 && now-last < int64(time.Second) || !s.dropLogAt.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg+" (further drops logged at most once a second)", fields...)
}

// handleRequest is the silo's transport.Handler: a call from another silo or
// a client. It decodes the arguments and queues the call; the reply is sent
// when the turn ends. It never blocks on the network: a request that needs
// a directory lookup is routed on its own goroutine, and at most
// Config.MaxRouting requests wait for a lookup or an activation (the
// others are answered with grain.ErrOverloaded). Their deadline is at most
// the silo's ResponseTimeout (the transport caps it).
func (s *Silo) handleRequest(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
	s.serveRequest(ctx, req, reply, false)
}

// serveRequest serves a request from the silo listener or, with gateway
// set, one from a client on the gateway listener that
// handleGatewayRequest admitted.
func (s *Silo) serveRequest(ctx context.Context, req *transport.Envelope, reply transport.Replier, gateway bool) {
	defer s.recoverRequest(ctx, req, reply)
	fail := func(err error) {
		if reply != nil {
			reply.Reply(encodeResponse(nil, err))
		} else {
			s.log.Debug("one-way call rejected", zap.Stringer("grain", req.Target), zap.Error(err))
		}
	}
	if !s.serving.Load() {
		fail(&notHereError{id: req.Target, why: "silo " + s.id + " is not serving"})
		return
	}
	if !gateway {
		// A silo peer says for whom the call runs; on the gateway the
		// stream's authenticated identity is already in ctx.
		var err error
		if ctx, err = withEnvelopeIdentity(ctx, req); err != nil {
			s.logBadRequest(ctx, req, err)
			fail(err)
			return
		}
	}
	if req.Target.Type == observerService && !gateway {
		s.handleObserverCall(req, reply) // observer.go
		return
	}
	if req.Target.Type == reminderServiceType && reply != nil && !gateway {
		// A notice may read the reminder table: off the stream's reader,
		// and within the routing bound.
		select {
		case s.routing <- struct{}{}:
		default:
			reply.Reply(encodeResponse(nil, fmt.Errorf("%w: silo %s: too many calls being routed", grain.ErrOverloaded, s.id)))
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.routing }()
			reply.Reply(s.reminders.handleNotice(ctx, req))
		}()
		return
	}
	ctx, err := withRequestContext(ctx, req)
	if err != nil {
		s.logBadRequest(ctx, req, err)
		fail(err)
		return
	}
	t := s.types[req.Target.Type]
	if t == nil && gateway {
		s.routeUnhosted(ctx, req, reply, fail)
		return
	}
	if t == nil {
		fail(fmt.Errorf("%w: %q is not hosted by silo %s", grain.ErrUnknownGrainType, req.Target.Type, s.id))
		return
	}
	md, args, err := decodeArgs(t.desc, req.Method, req.Fingerprint, req.Body)
	if err != nil {
		if errors.Is(err, grain.ErrBadRequest) {
			s.logBadRequest(ctx, req, err)
		}
		if !errors.Is(err, grain.ErrBadRequest) {
			err = fmt.Errorf("%w (silo %s)", err, s.id) // unknown or incompatible: say which silo
		}
		fail(err)
		return
	}
	m := &message{ctx: ctx, target: req.Target, typ: t, method: md, args: args, replyFn: reply, hops: req.Hops}
	if reply == nil {
		m.ctx, m.oneWayFailed = context.WithoutCancel(ctx), s.rerouteOneWay
	} else if m.chain, err = decodeChain(req.Chain); err != nil {
		s.logBadRequest(ctx, req, err)
		fail(err)
		return
	}
	if a := s.table.get(req.Target); a != nil || t.workers > 0 {
		// Active here, or a stateless worker: it runs here, whatever
		// the hops (a gateway never sends one on).
		if err := s.dispatchTo(m, a); err != nil {
			m.complete(nil, err)
		}
		return
	}
	// Not active here: the call waits for an activation or a directory
	// lookup, which etcd may take long to answer. Such calls are bounded:
	// beyond Config.MaxRouting of them, answer overloaded at once.
	select {
	case s.routing <- struct{}{}:
	default:
		fail(fmt.Errorf("%w: silo %s is routing or activating %d calls from other processes already; retry later",
			grain.ErrOverloaded, s.id, cap(s.routing)))
		return
	}
	if req.Hops > 0 {
		// This silo was chosen to host the grain: it hosts it without
		// placing it again (placement.go). A call is answered once
		// its grain's activation finished (or failed): it keeps its token
		// until then. (A one-way call gives it back when it is queued.)
		if reply != nil {
			m.replyFn = &routedReply{Replier: reply, routing: s.routing}
		} else {
			defer func() { <-s.routing }()
		}
		if err := s.dispatchTo(m, nil); err != nil {
			m.complete(nil, err)
		}
		return
	}
	// A client that did not know the host: route it like a local call, but
	// answer "not here, try X" instead of forwarding.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.routing }()
		inc := s.inc.Load()
		rt, err := inc.router.resolve(ctx, req.Target, t.placement, !s.stopping.Load())
		if err == nil && !rt.local && rt.hops == 0 {
			// The host came from a directory entry, maybe a cached one:
			// read the directory itself before sending the client away:
			// a cached entry this silo keeps using would never be
			// corrected, and would cost the host a lost registration on
			// every call. (A placement, hops 1, follows a read of etcd
			// that found no entry: absent entries are not cached.)
			inc.dir.Invalidate(req.Target)
			rt, err = inc.router.resolve(ctx, req.Target, t.placement, !s.stopping.Load())
		}
		switch {
		case err != nil:
			m.complete(nil, err)
		case !rt.local && gateway:
			s.routeFromGateway(ctx, req, reply, rt)
		case !rt.local:
			m.complete(nil, &notHereError{id: req.Target, why: "placed elsewhere",
				redirect: transport.Redirect{SiloID: rt.silo.SiloID, Address: rt.silo.Address}})
		default:
			if err := s.dispatch(m); err != nil {
				m.complete(nil, err)
			}
		}
	}()
}

// routeUnhosted routes a client's call for a grain type this silo does not
// host (a cluster whose silos host different types): it sends the client
// to, or forwards the call to, a silo that hosts it, within the routing
// bound. A grain not active anywhere is not placed here: this silo does
// not know its type's placement, so a silo that hosts the type routes it.
func (s *Silo) routeUnhosted(ctx context.Context, req *transport.Envelope, reply transport.Replier, fail func(error)) {
	if len(s.view.Current().Hosting(req.Target.Type)) == 0 {
		// No directory read for a type no silo hosts: a client must
		// not be able to make etcd work for names it makes up.
		fail(fmt.Errorf("runtime: call %s.%s: %w: no active silo hosts %q", req.Target, req.Method, grain.ErrUnknownGrainType, req.Target.Type))
		return
	}
	select {
	case s.routing <- struct{}{}:
	default:
		fail(fmt.Errorf("%w: silo %s is routing or activating %d calls from other processes already; retry later",
			grain.ErrOverloaded, s.id, cap(s.routing)))
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.routing }()
		defer s.recoverRequest(ctx, req, reply)
		r := s.inc.Load().router
		var rt route
		var err error
		if s.unhostedPlacement(req.Target.Type) == placeWorker {
			rt, err = r.resolve(ctx, req.Target, placeWorker, false)
		} else {
			rt, err = r.resolveUnhosted(ctx, req.Target)
		}
		switch {
		case err != nil:
			fail(err)
		case rt.local:
			fail(fmt.Errorf("%w: %q is not hosted by silo %s", grain.ErrUnknownGrainType, req.Target.Type, s.id))
		default:
			// A grain not active anywhere goes to a silo that hosts the
			// type (hops 0), which places it as its type says.
			s.routeFromGateway(ctx, req, reply, rt)
		}
	}()
}
