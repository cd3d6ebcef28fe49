package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// maxRouteAttempts bounds how often one call is routed again after a
// not-here answer (a stale directory entry, a lost registration race).
const maxRouteAttempts = 4

// router decides where a call goes (the directory, then placement over the
// membership view) and sends calls to other processes. Silos and clients
// share it: a silo routes with the directory, a client (which cannot read
// the directory) with routes, where it remembers which silo served each
// grain.
type router struct {
	self string // the silo doing the routing; "" for a client
	dir  directory.Directory
	view *cluster.View
	tc   *transport.Client
	// routes, on a client, remembers which gateway serves a grain, learnt
	// from the gateways' answers (clientroute.go); nil on a silo, or on a
	// client with a negative RouteCacheSize. A client's calls always go to
	// gateways, with no hops.
	routes *directory.Cache
	// maxMessage is the largest encoded arguments a call may send
	// (Config.MaxMessageSize, ClientConfig.MaxMessageSize).
	maxMessage int
	// localLoad counts this silo's activations, and loads estimates the
	// others', for least-activations placement (placement.go).
	localLoad func() int
	loads     loadEstimate
}

// route is where a call goes: this silo, or another silo. hops is the hop
// count to send: 1 tells the receiver it was chosen to host the grain.
type route struct {
	local bool
	silo  cluster.SiloInfo
	hops  uint8
	// hinted: a client's route from what it remembers of the grain.
	hinted bool
}

// notHereError says a silo does not host a grain and will not: the caller
// drops its cached entry and routes again, to redirect if it is known.
type notHereError struct {
	id       grain.ID
	redirect transport.Redirect
	why      string
}

func (e *notHereError) Error() string {
	msg := fmt.Sprintf("runtime: %s not hosted here (%s)", e.id, e.why)
	if e.redirect.SiloID != "" {
		msg += "; hosted by silo " + e.redirect.SiloID
	}
	return msg
}

// Is makes a not-here error match errNotHere and grain.ErrSiloUnavailable,
// which is what a caller that runs out of attempts sees.
func (e *notHereError) Is(target error) bool {
	return target == errNotHere || target == grain.ErrSiloUnavailable
}

// errNotHere matches every not-here answer, local or remote.
var errNotHere = errors.New("runtime: grain not hosted here")

// reroute says whether a call that failed with err should be routed again,
// and where to if known: a not-here answer, or a host that could not even
// be dialed (the request never left, so sending it elsewhere cannot run it
// twice). A host that cannot be dialed is usually one that just left and
// that the membership view has not caught up with yet.
//
// Only the routing layer's own answers count: an error a grain returned
// (say, from its own call to another grain) that merely wraps one must
// not make the caller run the grain's call again.
func reroute(err error, remote bool) (transport.Redirect, bool) {
	if remote && errors.Is(err, transport.ErrNotSent) {
		return transport.Redirect{}, true
	}
	return redirectOf(err)
}

// rerouteDelay is how long to wait before routing again after attempt
// failed: at once after a not-here with a redirect, a little longer each
// time otherwise, so the view can catch up.
func rerouteDelay(ctx context.Context, attempt int, rd transport.Redirect) error {
	if rd.SiloID != "" || attempt == 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// redirectOf returns the redirect of a not-here answer from this process or
// from a remote silo, and whether err is one. It looks at err itself, not
// its chain: see reroute.
func redirectOf(err error) (transport.Redirect, bool) {
	switch e := err.(type) {
	case *notHereError:
		return e.redirect, true
	case *transport.NotHereError:
		return e.Redirect, true
	}
	return transport.Redirect{}, false
}

// resolve finds where a call to id goes. hosted says whether this silo
// hosts the type (always false for a client).
func (r *router) resolve(ctx context.Context, id grain.ID, placement grain.Placement, hosted bool) (route, error) {
	if placement == placeWorker {
		return r.workerRoute(id.Type, hosted) // never in the directory
	}
	snap := r.view.Current()
	e, ok, err := r.dir.Lookup(ctx, id)
	if err != nil {
		return route{}, fmt.Errorf("%w: directory lookup of %s: %w", grain.ErrSiloUnavailable, id, err)
	}
	if ok && e.SiloID != r.self && snap.IsDead(e.SiloID, e.Incarnation) {
		// The cached host is dead. A silo that left gracefully removed its
		// entries, so read the directory itself before giving up.
		r.dir.Invalidate(id)
		if e, ok, err = r.dir.Lookup(ctx, id); err != nil {
			return route{}, fmt.Errorf("%w: directory lookup of %s: %w", grain.ErrSiloUnavailable, id, err)
		}
	}
	if ok {
		if e.SiloID == r.self {
			return route{local: true}, nil
		}
		if info, live := snap.Get(e.SiloID); live && info.Incarnation == e.Incarnation && info.Status != cluster.StatusDead {
			return route{silo: info}, nil
		}
		if snap.IsDead(e.SiloID, e.Incarnation) {
			// The host died; its entry goes with its lease. Until then no
			// other activation can register.
			r.dir.Invalidate(id)
			return route{}, fmt.Errorf("%w: %s was hosted by silo %s, which is dead; its grains can move once its lease expires",
				grain.ErrSiloUnavailable, id, e.SiloID)
		}
		// The host is not in our view yet (it joined after our last
		// update): trust the directory.
		return route{silo: cluster.SiloInfo{SiloID: e.SiloID, Address: e.Address, Incarnation: e.Incarnation}}, nil
	}
	candidates := snap.Hosting(id.Type)
	if len(candidates) == 0 {
		if hosted {
			return route{local: true}, nil
		}
		return route{}, fmt.Errorf("%w: no active silo hosts %q", grain.ErrUnknownGrainType, id.Type)
	}
	chosen := r.place(placement, id, candidates)
	if chosen.SiloID == r.self {
		return route{local: true}, nil
	}
	return route{silo: chosen, hops: 1}, nil
}

// invoke routes call until it reaches an activation: pick chooses the
// route of the first attempt (directory and placement, or a gateway), local
// runs the call on this silo, and a not-here answer (or a host that could
// not be dialed) routes it again, to the redirect if there is one.
func (r *router) invoke(ctx context.Context, call *grain.Call, md *grain.MethodDesc,
	pick func() (route, error), local func() (any, error)) (any, error) {
	var redirect *transport.Redirect
	var err error
	for attempt := range maxRouteAttempts {
		var rt route
		if redirect != nil {
			rt = r.redirected(*redirect)
		} else if rt, err = pick(); err != nil {
			return nil, fmt.Errorf("runtime: call %s.%s: %w", call.Target, md.Name, err)
		}
		var reply any
		if rt.local {
			reply, err = local()
		} else if reply, err = r.callRemote(ctx, rt, call, md); err == nil {
			r.placed(call.Target, rt, md)
		}
		rd, again := reroute(err, !rt.local)
		if !again {
			return reply, err
		}
		if r.dir != nil {
			r.dir.Invalidate(call.Target)
		}
		r.routes.Drop(call.Target)
		redirect = nil
		if rd.Address != "" {
			redirect = &rd
		}
		if err := rerouteDelay(ctx, attempt, rd); err != nil {
			return nil, callErrorFor(call, md, err)
		}
	}
	// The last error is reported as text only: wrapped, a not-here answer
	// in it would make a caller further up route its own call again.
	return nil, fmt.Errorf("%w: call to %s routed %d times without reaching an activation: %v",
		grain.ErrSiloUnavailable, call.Target, maxRouteAttempts, err)
}

// redirected turns a not-here redirect into a route.
func (r *router) redirected(rd transport.Redirect) route {
	if r.self == "" {
		// A client: to the gateway the redirect names, as a plain call
		// (only a silo may tell another to host a grain).
		return route{silo: cluster.SiloInfo{SiloID: rd.SiloID, Address: rd.Address}}
	}
	if rd.SiloID == r.self && r.self != "" {
		return route{local: true}
	}
	info := cluster.SiloInfo{SiloID: rd.SiloID, Address: rd.Address}
	if r.view != nil {
		if known, ok := r.view.Current().Get(rd.SiloID); ok && known.Address == rd.Address {
			info = known
		}
	}
	return route{silo: info, hops: 1}
}

// placed records where a call that was placed (or redirected) was served,
// so that the next call to id goes straight there without reading the
// directory. A client remembers the gateway that answered: the grain's
// host's, or one that forwarded the call while placing the grain
// elsewhere, which redirects the next call to the host's.
func (r *router) placed(id grain.ID, rt route, md *grain.MethodDesc) {
	if r.self == "" {
		if !rt.hinted && !md.Flags.Has(grain.OneWay) {
			r.routes.Put(id, directory.Entry{SiloID: rt.silo.SiloID, Address: rt.silo.Address, Incarnation: rt.silo.Incarnation})
		}
		return
	}
	if rt.hops == 0 || rt.silo.Incarnation == 0 {
		return
	}
	if d, ok := r.dir.(directory.Rememberer); ok {
		d.Remember(id, directory.Entry{SiloID: rt.silo.SiloID, Address: rt.silo.Address, Incarnation: rt.silo.Incarnation})
	}
}

// callRemote sends call to the silo of rt and decodes the reply.
// The request values of ctx go along (see requestContext), and a silo also
// sends the caller's identity (see grain.CallerIdentity); a client never
// does: its gateway sets it.
func (r *router) callRemote(ctx context.Context, rt route, call *grain.Call, md *grain.MethodDesc) (any, error) {
	return callRemote(ctx, r.tc, rt, call, md, r.self != "", r.maxMessage)
}

func callRemote(ctx context.Context, tc *transport.Client, rt route, call *grain.Call, md *grain.MethodDesc, withIdentity bool, maxMessage int) (any, error) {
	body, err := msgpack.Marshal(call.Args)
	if err != nil {
		return nil, fmt.Errorf("%w: encode arguments of %s.%s: %w", grain.ErrBadRequest, call.Target, md.Name, err)
	}
	if maxMessage > 0 && len(body) > maxMessage {
		return nil, tooLarge(call.Target, md, "arguments", len(body), maxMessage)
	}
	env := &transport.Envelope{Target: call.Target, Method: md.Name, Fingerprint: md.Fingerprint, Flags: md.Flags, Hops: rt.hops, Body: body}
	env.Context = requestContext(ctx, withIdentity)
	if withIdentity && !md.Flags.Has(grain.OneWay) {
		// A silo's call: the turns that wait for it.
		chain, err := outChain(ctx)
		if err != nil {
			return nil, err
		}
		env.Chain = encodeChain(chain)
	}
	if md.Flags.Has(grain.OneWay) {
		return nil, tc.Send(ctx, rt.silo.Address, env)
	}
	resp, err := tc.Call(ctx, rt.silo.Address, env)
	if err != nil {
		return nil, remoteCallError(call, md, err)
	}
	if md.NewReply == nil {
		return nil, nil
	}
	return decodeReply(call.Target.Type, md, rt.silo.SiloID, resp.Body)
}

// remoteCallError is the error of a call to another process that failed
// with err: the transport's own timeout and cancellation read as those of
// an in-process call (a remote silo's answer, a *grain.RemoteError, keeps
// its text), so that a call fails alike wherever its grain is.
func remoteCallError(call *grain.Call, md *grain.MethodDesc, err error) error {
	var re *grain.RemoteError
	if !errors.As(err, &re) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return callErrorFor(call, md, context.DeadlineExceeded)
		case errors.Is(err, context.Canceled):
			return callErrorFor(call, md, context.Canceled)
		case errors.Is(err, grain.ErrTooLarge) && grain.OutcomeOf(err) == grain.OutcomeFailed:
			// A reply over this process's limit (the callee's is larger).
			return grain.WithOutcome(fmt.Errorf("runtime: call %s.%s: the reply is over the message size limit: %w", call.Target, md.Name, err), grain.OutcomeFailed)
		}
	}
	return callerSignature(call.Target, md, err)
}

// encodeResponse turns the outcome of a call that came from another process
// into its response envelope.
func encodeResponse(reply any, err error) *transport.Envelope {
	if err != nil {
		if rd, ok := redirectOf(err); ok {
			return transport.NewNotHereResponse(rd.SiloID, rd.Address)
		}
		return transport.NewErrorResponse(err)
	}
	if reply == nil {
		return transport.NewResponse(nil)
	}
	if b, ok := reply.(encodedReply); ok {
		return transport.NewResponse(b)
	}
	body, err := msgpack.Marshal(reply)
	if err != nil {
		// The method ran; only its result cannot be sent.
		return transport.NewErrorResponse(grain.WithOutcome(fmt.Errorf("%w: encode reply: %w", grain.ErrBadRequest, err), grain.OutcomeFailed))
	}
	return transport.NewResponse(body)
}
