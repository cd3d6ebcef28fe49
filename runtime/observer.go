package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// Observers (see grain.ObserverHost): objects of a client, or of a grain's
// silo, that grains call back.
//
// Every observer lives on one silo, the one that delivers its calls: a
// client's on the gateway it made it through, a grain's on the grain's
// silo. That silo keeps a table of observers by key (128 random bits); a
// grain.ObserverRef names the silo and the key. A call to an observer is
// a request to that silo (or a local delivery on it), addressed to the
// observerService target with the key; the silo pushes it down the
// client's gateway stream (transport.Stream.Push) or queues it for its
// local object, and answers once it did (see grain.ObserverCaller). The
// client runs what is pushed to it on the object it registered.
//
// A client makes an observer with a "$create" request to the gateway on
// the stream that will carry its calls, and deletes it with "$delete";
// the gateway drops a stream's observers when the stream ends, so a
// client that dies or disconnects has none left there, and calls to them
// fail with grain.ErrObserverGone as soon as the gateway noticed (the
// connection's reset, or keepalive).

// observerService is the target type of observer calls and of clients'
// observer control requests. No grain type can have it (grain type names
// come from Go package and interface names).
const observerService = "granary.observers"

// The control methods a client sends to its gateway.
const (
	observerCreate = "$create"
	observerDelete = "$delete"
)

// observerTypeKey is the request-context key an observer call carries the
// observer interface's name under.
const observerTypeKey = reservedContextPrefix + "observer"

// Bounds of observers.
const (
	// MaxObserversPerConnection is how many observers one client
	// connection (a client's stream to a gateway) may have on the
	// gateway, and how many a Client holds.
	MaxObserversPerConnection = 1000
	// MaxObserversPerSilo is how many observers a silo holds in all:
	// those of every client connected to its gateway and those its
	// grains made.
	MaxObserversPerSilo = 100_000
	// ObserverQueueSize is how many calls may wait for one local
	// observer object (a client's, or a grain's on its silo); beyond it a
	// call is refused (on a silo, with grain.ErrOverloaded) or, on a
	// client, dropped and logged.
	ObserverQueueSize = 1000
	// maxObserverTypeName bounds the observer interface name a client
	// sends in "$create".
	maxObserverTypeName = 256
	// observerCallTimeout bounds one call of an observer's method.
	observerCallTimeout = 30 * time.Second
)

// newObserverKey returns 128 random bits in hex.
func newObserverKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// observerRunner runs the calls to one local observer object, one at a
// time in arrival order, on a goroutine that exists while calls wait.
type observerRunner struct {
	typ *grain.TypeDesc
	obj any
	log *zap.Logger
	wg  *sync.WaitGroup

	mu      sync.Mutex
	queue   []observerCall
	running bool
	deleted bool
}

type observerCall struct {
	md   *grain.MethodDesc
	args any
}

// decode resolves and decodes the call req carries for r's type.
func (r *observerRunner) decode(req *transport.Envelope) (observerCall, error) {
	if t := req.Context[observerTypeKey]; t != r.typ.Name {
		return observerCall{}, fmt.Errorf("%w: call for a %q observer to a %s", grain.ErrBadRequest, t, r.typ.Name)
	}
	md, args, err := decodeArgs(r.typ, req.Method, req.Fingerprint, req.Body)
	if err != nil {
		return observerCall{}, err
	}
	return observerCall{md: md, args: args}, nil
}

// enqueue queues c; it fails with ErrObserverGone once the observer is
// deleted and with ErrOverloaded when ObserverQueueSize calls wait.
func (r *observerRunner) enqueue(c observerCall) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.deleted:
		return fmt.Errorf("%w: the %s was deleted", grain.ErrObserverGone, r.typ.Name)
	case len(r.queue) >= ObserverQueueSize:
		return fmt.Errorf("%w: %d calls wait for the %s", grain.ErrOverloaded, ObserverQueueSize, r.typ.Name)
	}
	r.queue = append(r.queue, c)
	if !r.running {
		r.running = true
		r.wg.Add(1)
		go r.run()
	}
	return nil
}

// run drains the queue, then returns.
func (r *observerRunner) run() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 || r.deleted {
			r.queue = nil
			r.running = false
			r.mu.Unlock()
			return
		}
		c := r.queue[0]
		r.queue[0] = observerCall{}
		r.queue = r.queue[1:]
		r.mu.Unlock()
		r.call(c)
	}
}

func (r *observerRunner) call(c observerCall) {
	ctx, cancel := context.WithTimeout(context.Background(), observerCallTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("observer: method panicked", zap.String("observer", r.typ.Name), zap.String("method", c.md.Name), zap.Any("panic", p))
		}
	}()
	if _, err := c.md.Invoke(ctx, r.obj, c.args); err != nil {
		r.log.Debug("observer: method failed", zap.String("observer", r.typ.Name), zap.String("method", c.md.Name), zap.Error(err))
	}
}

// stop deletes the runner: queued calls are dropped.
func (r *observerRunner) stop() {
	r.mu.Lock()
	r.deleted = true
	r.queue = nil
	r.mu.Unlock()
}

// observerHandle implements grain.ObserverHandle.
type observerHandle struct {
	ref      grain.ObserverRef
	done     chan struct{}
	once     sync.Once
	onDelete func()
}

func (h *observerHandle) Ref() grain.ObserverRef { return h.ref }
func (h *observerHandle) Done() <-chan struct{}  { return h.done }
func (h *observerHandle) Delete()                { h.close(true) }

// close closes done once; with notify it runs onDelete (the owner
// deleting, rather than the observer's connection ending).
func (h *observerHandle) close(notify bool) {
	h.once.Do(func() {
		close(h.done)
		if notify && h.onDelete != nil {
			h.onDelete()
		}
	})
}

// ---- silo side ----

// siloObserver is one observer a silo delivers calls to: a client's (its
// gateway stream) or a local object's.
type siloObserver struct {
	typ    string
	stream *transport.Stream // a client's observer
	conn   *observerConn     // its connection's observers
	local  *observerRunner   // a local object's
	handle *observerHandle   // a local object's
}

// observerConn is the observers of one client stream.
type observerConn struct {
	keys map[string]struct{}
}

// observerTable is a silo's observers.
type observerTable struct {
	mu    sync.Mutex
	byKey map[string]*siloObserver
	conns map[*transport.Stream]*observerConn
	wg    sync.WaitGroup // local runners
}

func (s *Silo) observerTable() *observerTable {
	s.obsOnce.Do(func() {
		s.obs = &observerTable{byKey: map[string]*siloObserver{}, conns: map[*transport.Stream]*observerConn{}}
	})
	return s.obs
}

// CreateObserver implements grain.ObserverHost: it makes obj callable as
// an observer on this silo. Its calls run on a goroutine of the silo, one
// at a time. The observer lives until deleted or the silo stops: a grain
// that makes one deletes it when done with it (in OnDeactivate, say).
func (s *Silo) CreateObserver(_ context.Context, t *grain.TypeDesc, obj any) (grain.ObserverHandle, error) {
	if t == nil || obj == nil {
		return nil, fmt.Errorf("%w: CreateObserver needs an observer type and an object", grain.ErrBadRequest)
	}
	tab := s.observerTable()
	key := newObserverKey()
	r := &observerRunner{typ: t, obj: obj, log: s.log, wg: &tab.wg}
	h := &observerHandle{ref: grain.ObserverRef{Type: t.Name, Silo: s.id, Incarnation: s.inc.Load().id, Key: key}, done: make(chan struct{})}
	h.onDelete = func() {
		tab.mu.Lock()
		delete(tab.byKey, key)
		tab.mu.Unlock()
		r.stop()
	}
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if len(tab.byKey) >= MaxObserversPerSilo {
		return nil, fmt.Errorf("%w: silo %s holds its maximum of %d observers", grain.ErrOverloaded, s.id, MaxObserversPerSilo)
	}
	tab.byKey[key] = &siloObserver{typ: t.Name, local: r, handle: h}
	return h, nil
}

// InvokeObserver implements grain.ObserverCaller.
func (s *Silo) InvokeObserver(ctx context.Context, ref grain.ObserverRef, t *grain.TypeDesc, md *grain.MethodDesc, args any) error {
	body, err := msgpack.Marshal(args)
	if err != nil {
		return fmt.Errorf("%w: encode arguments of %s.%s: %w", grain.ErrBadRequest, t.Name, md.Name, err)
	}
	env := &transport.Envelope{Target: grain.ID{Type: observerService, Key: ref.Key}, Method: md.Name,
		Fingerprint: md.Fingerprint, Flags: md.Flags, Context: map[string]string{observerTypeKey: ref.Type}, Body: body}
	if ref.Silo == s.id {
		if err := s.deliverObserver(env); err != nil {
			return fmt.Errorf("runtime: call %s.%s: %w", t.Name, md.Name, err)
		}
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var release func()
		ctx, release = transport.WithTimeout(ctx, s.cfg.ResponseTimeout)
		defer release()
	}
	info, err := s.observerSilo(ctx, ref)
	if err != nil {
		return fmt.Errorf("runtime: call %s.%s: %w", t.Name, md.Name, err)
	}
	if _, err := s.tc.Call(ctx, info.Address, env); err != nil {
		return fmt.Errorf("runtime: call %s.%s on silo %s: %w", t.Name, md.Name, ref.Silo, err)
	}
	return nil
}

// observerViewWait bounds how long a call to an observer waits for the
// membership view to learn of the observer's silo (one that joined after
// the view's last update).
const observerViewWait = 2 * time.Second

// observerSilo returns the silo that delivers ref's calls. A silo whose
// incarnation of ref the view knows to have ended (the silo died,
// restarted or rejoined since) is ErrObserverGone; one the view does not
// know yet is waited for, briefly, then ErrSiloUnavailable.
func (s *Silo) observerSilo(ctx context.Context, ref grain.ObserverRef) (cluster.SiloInfo, error) {
	var info cluster.SiloInfo
	var gone bool
	known := func(snap *cluster.Snapshot) bool {
		if snap.IsDead(ref.Silo, ref.Incarnation) {
			gone = true
			return true
		}
		i, ok := snap.Get(ref.Silo)
		if ok && i.Incarnation == ref.Incarnation && (i.Status == cluster.StatusActive || i.Status == cluster.StatusShuttingDown) {
			info = i
			return true
		}
		return false
	}
	if !known(s.view.Current()) {
		wctx, cancel := context.WithTimeout(ctx, observerViewWait)
		_, err := s.view.WaitFor(wctx, known)
		cancel()
		if err != nil && !gone && info.Address == "" {
			return info, fmt.Errorf("%w: silo %s (incarnation %d), which delivers the observer's calls, is not serving as far as silo %s knows",
				grain.ErrSiloUnavailable, ref.Silo, ref.Incarnation, s.id)
		}
	}
	if gone {
		return info, fmt.Errorf("%w: silo %s (incarnation %d), which delivered its calls, left the cluster", grain.ErrObserverGone, ref.Silo, ref.Incarnation)
	}
	return info, nil
}

// handleObserverCall serves an observer call from a silo peer.
func (s *Silo) handleObserverCall(req *transport.Envelope, reply transport.Replier) {
	err := s.deliverObserver(req)
	if reply != nil {
		reply.Reply(encodeResponse(nil, err))
	}
}

// deliverObserver hands an observer call to the client stream or local
// object of its key.
func (s *Silo) deliverObserver(req *transport.Envelope) error {
	tab := s.observerTable()
	tab.mu.Lock()
	o := tab.byKey[req.Target.Key]
	tab.mu.Unlock()
	if o == nil {
		return fmt.Errorf("%w: silo %s has no such observer (deleted, or its client disconnected)", grain.ErrObserverGone, s.id)
	}
	if t := req.Context[observerTypeKey]; t != o.typ {
		return fmt.Errorf("%w: call for a %q observer to a %s", grain.ErrBadRequest, t, o.typ)
	}
	if o.local != nil {
		c, err := o.local.decode(req)
		if err != nil {
			return err
		}
		return o.local.enqueue(c)
	}
	push := &transport.Envelope{Target: req.Target, Method: req.Method, Fingerprint: req.Fingerprint, Flags: req.Flags,
		Context: map[string]string{observerTypeKey: o.typ}, Body: req.Body}
	err := o.stream.Push(push)
	if errors.Is(err, transport.ErrStreamClosed) {
		s.dropObserverConn(o.stream)
		return fmt.Errorf("%w: the client of this observer disconnected from silo %s", grain.ErrObserverGone, s.id)
	}
	return err
}

// handleObserverControl serves a client's "$create" and "$delete" on the
// gateway.
func (s *Silo) handleObserverControl(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
	respond := func(body any, err error) {
		if reply != nil {
			reply.Reply(encodeResponse(body, err))
		} else if err != nil {
			s.log.Debug("gateway: observer request refused", zap.Error(err))
		}
	}
	st := transport.StreamOf(ctx)
	if st == nil {
		respond(nil, fmt.Errorf("%w: observer request without a stream", grain.ErrBadRequest))
		return
	}
	switch req.Method {
	case observerCreate:
		var typ string
		if err := codec.Unmarshal(req.Body, &typ); err != nil || typ == "" || len(typ) > maxObserverTypeName {
			respond(nil, fmt.Errorf("%w: gateway of silo %s: %s wants an observer type name of 1 to %d bytes",
				grain.ErrBadRequest, s.id, observerCreate, maxObserverTypeName))
			return
		}
		ref, err := s.addClientObserver(st, typ)
		respond(ref, err)
	case observerDelete:
		var key string
		if err := codec.Unmarshal(req.Body, &key); err != nil {
			respond(nil, fmt.Errorf("%w: gateway of silo %s: %s: %w", grain.ErrBadRequest, s.id, observerDelete, err))
			return
		}
		s.deleteClientObserver(st, key)
		respond(nil, nil)
	default:
		s.gwStats.refusedFields.Add(1)
		respond(nil, fmt.Errorf("%w: gateway of silo %s: a client may not call observers through the gateway (method %q)",
			grain.ErrPermissionDenied, s.id, req.Method))
	}
}

// addClientObserver registers an observer of the client stream st.
func (s *Silo) addClientObserver(st *transport.Stream, typ string) (grain.ObserverRef, error) {
	tab := s.observerTable()
	key := newObserverKey()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	select {
	case <-st.Done():
		return grain.ObserverRef{}, fmt.Errorf("%w: the stream ended", grain.ErrSiloUnavailable)
	default:
	}
	conn := tab.conns[st]
	switch {
	case conn != nil && len(conn.keys) >= MaxObserversPerConnection:
		return grain.ObserverRef{}, fmt.Errorf("%w: gateway of silo %s: this connection has its maximum of %d observers",
			grain.ErrOverloaded, s.id, MaxObserversPerConnection)
	case len(tab.byKey) >= MaxObserversPerSilo:
		return grain.ObserverRef{}, fmt.Errorf("%w: gateway of silo %s holds its maximum of %d observers",
			grain.ErrOverloaded, s.id, MaxObserversPerSilo)
	}
	if conn == nil {
		conn = &observerConn{keys: map[string]struct{}{}}
		tab.conns[st] = conn
		// One callback per connection with observers, when its stream
		// ends: the client is gone, and so are its observers.
		st.AfterDone(func() { s.dropObserverConn(st) })
	}
	conn.keys[key] = struct{}{}
	tab.byKey[key] = &siloObserver{typ: typ, stream: st, conn: conn}
	return grain.ObserverRef{Type: typ, Silo: s.id, Incarnation: s.inc.Load().id, Key: key}, nil
}

// deleteClientObserver deletes an observer of st; a key of another
// stream is left alone.
func (s *Silo) deleteClientObserver(st *transport.Stream, key string) {
	tab := s.observerTable()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	o := tab.byKey[key]
	if o == nil || o.stream != st {
		return
	}
	delete(tab.byKey, key)
	delete(o.conn.keys, key)
}

// dropObserverConn forgets the observers of a client stream that ended.
func (s *Silo) dropObserverConn(st *transport.Stream) {
	tab := s.observerTable()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	conn := tab.conns[st]
	if conn == nil {
		return
	}
	for key := range conn.keys {
		delete(tab.byKey, key)
	}
	delete(tab.conns, st)
	s.log.Debug("gateway: client stream ended; its observers are gone", zap.String("peer", st.Peer()), zap.Int("observers", len(conn.keys)))
}

// ObserverCount returns how many observers the silo holds (its clients'
// and its grains'), for tests and metrics.
func (s *Silo) ObserverCount() int {
	tab := s.observerTable()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return len(tab.byKey)
}

// A grain's Context makes and calls observers through its silo.

var (
	_ grain.ObserverHost   = (*grainContext)(nil)
	_ grain.ObserverCaller = (*grainContext)(nil)
	_ grain.ObserverHost   = (*Silo)(nil)
	_ grain.ObserverCaller = (*Silo)(nil)
	_ grain.ObserverHost   = (*Client)(nil)
)

func (c *grainContext) CreateObserver(ctx context.Context, t *grain.TypeDesc, obj any) (grain.ObserverHandle, error) {
	return c.silo.CreateObserver(ctx, t, obj)
}

func (c *grainContext) InvokeObserver(ctx context.Context, ref grain.ObserverRef, t *grain.TypeDesc, md *grain.MethodDesc, args any) error {
	if c.act().fenced() {
		return fmt.Errorf("%w: %s belongs to a fenced incarnation of silo %s", grain.ErrSiloUnavailable, c.id, c.silo.id)
	}
	return c.silo.InvokeObserver(ctx, ref, t, md, args)
}

// ---- client side ----

// clientObserver is one observer a client made.
type clientObserver struct {
	gateway string
	runner  *observerRunner
	handle  *observerHandle
}

// clientObservers is a client's observers, by key.
type clientObservers struct {
	mu       sync.Mutex
	byKey    map[string]*clientObserver
	creating int            // CreateObserver calls under way
	wg       sync.WaitGroup // runners and watchers
	drops    badRequestLog  // rate-limits the log of dropped pushes
}

func (c *Client) observers() *clientObservers {
	c.obsOnce.Do(func() { c.obs = &clientObservers{byKey: map[string]*clientObserver{}} })
	return c.obs
}

// CreateObserver implements grain.ObserverHost: it makes obj, which
// implements the observer interface t describes, callable by grains. It
// registers obj with a gateway, over the connection that will carry its
// calls; they run on a goroutine of the client, one at a time, in the
// order the client receives them (at most ObserverQueueSize wait; more
// are dropped and logged). A client holds at most
// MaxObserversPerConnection observers.
//
// The observer lives as long as that connection: when it breaks (the
// gateway stopped or is unreachable), the handle's Done is closed and
// grains' calls to the reference fail with grain.ErrObserverGone. Make a
// new observer and subscribe it again then.
func (c *Client) CreateObserver(ctx context.Context, t *grain.TypeDesc, obj any) (grain.ObserverHandle, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("%w: client is closed", grain.ErrSiloUnavailable)
	}
	if t == nil || obj == nil {
		return nil, fmt.Errorf("%w: CreateObserver needs an observer type and an object", grain.ErrBadRequest)
	}
	tab := c.observers()
	tab.mu.Lock()
	if len(tab.byKey)+tab.creating >= MaxObserversPerConnection {
		tab.mu.Unlock()
		return nil, fmt.Errorf("%w: the client holds its maximum of %d observers", grain.ErrOverloaded, MaxObserversPerConnection)
	}
	tab.creating++ // a place, until the observer is in byKey or failed
	tab.mu.Unlock()
	defer func() {
		tab.mu.Lock()
		tab.creating--
		tab.mu.Unlock()
	}()
	if _, ok := ctx.Deadline(); !ok {
		var release func()
		ctx, release = transport.WithTimeout(ctx, c.cfg.ResponseTimeout)
		defer release()
	}
	gw, err := c.picker.pick()
	if err != nil {
		return nil, err
	}
	lost, err := c.tc.StreamDone(ctx, gw)
	if err != nil {
		return nil, fmt.Errorf("runtime: create %s observer at gateway %s: %w", t.Name, gw, err)
	}
	body, err := msgpack.Marshal(t.Name)
	if err != nil {
		return nil, err
	}
	resp, err := c.tc.Call(ctx, gw, &transport.Envelope{Target: grain.ID{Type: observerService}, Method: observerCreate, Body: body})
	if err != nil {
		return nil, fmt.Errorf("runtime: create %s observer at gateway %s: %w", t.Name, gw, err)
	}
	var ref grain.ObserverRef
	if err := codec.Unmarshal(resp.Body, &ref); err != nil || ref.Key == "" || ref.Type != t.Name {
		return nil, fmt.Errorf("%w: gateway %s answered the creation of a %s observer with %+v (%v)", grain.ErrBadRequest, gw, t.Name, ref, err)
	}
	select {
	case <-lost:
		// The stream the gateway registered it on may be gone already.
		return nil, fmt.Errorf("runtime: create %s observer at gateway %s: %w: the connection was lost", t.Name, gw, grain.ErrSiloUnavailable)
	default:
	}
	o := &clientObserver{gateway: gw, runner: &observerRunner{typ: t, obj: obj, log: c.log, wg: &tab.wg},
		handle: &observerHandle{ref: ref, done: make(chan struct{})}}
	forget := func() {
		tab.mu.Lock()
		delete(tab.byKey, ref.Key)
		tab.mu.Unlock()
		o.runner.stop()
	}
	deleted := make(chan struct{})
	o.handle.onDelete = func() {
		close(deleted)
		forget()
		// Tell the gateway, so that calls fail at once; if this is lost,
		// the calls are dropped here until the connection ends.
		body, _ := msgpack.Marshal(ref.Key)
		_ = c.tc.Send(context.Background(), gw, &transport.Envelope{Target: grain.ID{Type: observerService}, Method: observerDelete, Body: body})
	}
	tab.mu.Lock()
	tab.byKey[ref.Key] = o
	tab.mu.Unlock()
	tab.wg.Add(1)
	go func() {
		defer tab.wg.Done()
		select {
		case <-lost:
			forget()
			o.handle.close(false)
		case <-deleted:
		}
	}()
	return o.handle, nil
}

// onPush receives an observer call pushed by gateway addr.
func (c *Client) onPush(addr string, env *transport.Envelope) {
	if env.Target.Type != observerService {
		c.dropPush(addr, env, errors.New("not an observer call"))
		return
	}
	tab := c.observers()
	tab.mu.Lock()
	o := tab.byKey[env.Target.Key]
	tab.mu.Unlock()
	if o == nil || o.gateway != addr {
		c.dropPush(addr, env, grain.ErrObserverGone)
		return
	}
	call, err := o.runner.decode(env)
	if err == nil {
		err = o.runner.enqueue(call)
	}
	if err != nil {
		c.dropPush(addr, env, err)
	}
}

func (c *Client) dropPush(addr string, env *transport.Envelope, err error) {
	if ok, suppressed := c.observers().drops.allow(addr); ok {
		c.log.Warn("client: observer call from a gateway dropped", zap.String("gateway", addr), zap.String("method", env.Method),
			zap.Int("suppressed_since_last", suppressed), zap.Error(err))
	}
}

// closeObservers deletes the client's observers and waits for their
// goroutines; the client's transport is closed.
func (c *Client) closeObservers() {
	tab := c.observers()
	tab.mu.Lock()
	all := make([]*clientObserver, 0, len(tab.byKey))
	for _, o := range tab.byKey {
		all = append(all, o)
	}
	tab.mu.Unlock()
	for _, o := range all {
		o.handle.close(false)
		o.runner.stop()
	}
	tab.wg.Wait()
}
