package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/granary-rt/granary/grain"
)

// Handler receives the requests arriving at a Server.
type Handler interface {
	// HandleRequest is called on the stream's reader goroutine, once per
	// request, in arrival order; it must not block for long (queue the call
	// and return) and must not panic.
	//
	// For a KindRequest, ctx has the request's timeout as its deadline
	// (none if req.Timeout is 0); it is cancelled when the stream dies, the
	// server stops hard or the client cancels the request (its caller's
	// context was cancelled: see Client.Call), and is not to be used after
	// reply. A cancelled request must still be replied to. reply is
	// non-nil and reply.Reply must be called exactly once, from any
	// goroutine, with the response (see NewResponse, NewErrorResponse,
	// NewNotHereResponse); the transport sets its Kind and ID and ignores
	// further calls. Reply never blocks: the stream's send queue always has
	// room for the replies of the requests it admitted (see
	// ServerConfig.QueueSize). A peer that stops reading its replies has its
	// connection closed after ServerConfig.SendStallTimeout; replies to it
	// are then dropped.
	//
	// For a KindOneWay request, reply is nil, and ctx is only cancelled when
	// the stream dies: nothing tells the transport when the runtime is done
	// with the request, so it sets no timer; req.Timeout still says how long
	// the sender meant to wait, for the runtime to drop stale requests or
	// set its own deadline.
	HandleRequest(ctx context.Context, req *Envelope, reply Replier)
}

// Replier sends the response to one request, once. Reply takes ownership
// of resp. A response over the limits is replaced by an error response
// wrapping grain.ErrTooLarge. (An interface rather than a func, so that
// the server hands out its per-request state without allocating a
// closure.)
type Replier interface {
	Reply(resp *Envelope)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Envelope, reply Replier)

// HandleRequest calls f.
func (f HandlerFunc) HandleRequest(ctx context.Context, req *Envelope, reply Replier) {
	f(ctx, req, reply)
}

// Server accepts streams from Clients and hands their requests to a Handler.
type Server struct {
	cfg ServerConfig
	h   Handler
	log *zap.Logger
	gs  *grpc.Server

	stopping chan struct{} // closed when Stop starts: streams drain
	stopOnce sync.Once

	wg    sync.WaitGroup // stream readers and writers
	stats counters

	connMu sync.Mutex
	conns  map[string][]*trackedConn // by remote address
	logs   logLimiter                // per peer host: warnings about misbehaving peers
}

// NewServer returns a Server that passes requests to h. Call Serve to start
// it.
func NewServer(cfg ServerConfig, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("transport: NewServer: nil Handler")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kp, ep := cfg.keepalive()
	s := &Server{cfg: cfg, h: h, log: cfg.Logger, stopping: make(chan struct{}), conns: make(map[string][]*trackedConn)}
	s.logs.init(time.Second)
	opts := append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(cfg.MaxStreamsPerConnection)),
		grpc.MaxRecvMsgSize(cfg.MaxFrameSize),
		grpc.MaxSendMsgSize(cfg.MaxFrameSize),
		grpc.KeepaliveParams(kp),
		grpc.KeepaliveEnforcementPolicy(ep),
		grpc.WaitForHandlers(true),
	}, cfg.GRPCOptions...)
	if cfg.Credentials != nil {
		opts = append(opts, grpc.Creds(cfg.Credentials))
	}
	s.gs = grpc.NewServer(opts...)
	s.gs.RegisterService(&serviceDesc, s)
	return s, nil
}

// Serve accepts connections on lis until Stop. It returns nil after Stop,
// and an error if lis fails or Serve is called after Stop.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.gs.Serve(&trackingListener{Listener: lis, s: s}); err != nil {
		return fmt.Errorf("transport: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// Stats returns the server's traffic counts.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Stop stops the server: it stops accepting connections and streams, answers
// requests that arrive from now on with grain.ErrSiloUnavailable, waits for
// the replies of the requests in flight, and closes the streams. When ctx
// ends first, it closes all connections at once (their requests' contexts
// are cancelled, their callers fail with grain.ErrOutcomeUnknown) and
// returns ctx's error. Stop returns when all the server's goroutines have
// exited.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	graceful := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(graceful)
	}()
	var err error
	select {
	case <-graceful:
	case <-ctx.Done():
		s.gs.Stop()
		<-graceful
		err = fmt.Errorf("transport: stop: closed connections before their requests completed: %w", ctx.Err())
	}
	s.wg.Wait()
	return err
}

// frameError is a frame that could not be decoded.
type frameError struct{ err error }

func (e frameError) Error() string { return "transport: malformed frame: " + e.err.Error() }
func (e frameError) Unwrap() error { return e.err }

// serverStream is the server's end of one Connect stream.
type serverStream struct {
	srv  *Server
	st   grpc.ServerStream
	ctx  context.Context
	log  *zap.Logger
	w    *writer
	peer string

	// inflight counts requests whose reply has not been queued. Once
	// draining is set, no new request is counted and the reply that brings
	// inflight to zero signals idle.
	inflight atomic.Int64
	draining atomic.Bool
	idle     chan struct{}

	// unsent counts the requests of this stream whose reply has not been
	// sent (queued or not); conn is the same count over the stream's
	// connection (nil if it cannot be told apart). Requests beyond
	// MaxInflightPerStream or MaxInflightPerConnection are answered with
	// grain.ErrOverloaded at once.
	unsent atomic.Int64
	conn   *trackedConn
	// bad is the malformed-request budget of the stream's connection (or
	// of the stream alone).
	bad *badBudget

	// reqs are the requests in flight (admitted, not yet replied to) by
	// id, for the client's cancellations; made on first use.
	reqMu sync.Mutex
	reqs  map[uint64]*replier

	// failed is closed, once, when the peer is found not to read its
	// replies: a reply could not be queued, or the writer made no progress
	// for SendStallTimeout while the reader waited for room.
	failed   chan struct{}
	failOnce sync.Once
	// room gets a token whenever the writer sent a frame.
	room chan struct{}
}

// connect runs one stream; it is the gRPC handler of Connect. It owns the
// stream's reader and writer goroutines and returns after the writer.
func (s *Server) connect(st grpc.ServerStream) error {
	ctx := st.Context()
	ss := &serverStream{srv: s, st: st, ctx: ctx, idle: make(chan struct{}, 1),
		failed: make(chan struct{}), room: make(chan struct{}, 1)}
	if p, ok := peer.FromContext(ctx); ok {
		ss.peer = p.Addr.String()
		ss.conn = s.connOf(ss.peer)
	}
	if ss.conn != nil {
		ss.bad = ss.conn.bad
	} else {
		ss.bad = newBadBudget(s.cfg.MalformedPerSecond)
	}
	ss.log = s.log.With(zap.String("peer", ss.peer))
	// Room for every reply the stream may owe plus QueueSize more
	// (answers to rejected requests): a reply that finds it full means the
	// peer sends without reading.
	ss.w = newWriter(&s.cfg.Limits, s.cfg.MaxInflightPerStream+s.cfg.QueueSize, st.SendMsg, &s.stats)
	ss.w.sent = ss.sent
	readDone := make(chan error, 1)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		readDone <- ss.read()
		// The stream has ended: what it still owes will never be sent.
		<-ss.w.done
		if ss.conn != nil {
			ss.conn.unsent.Add(-ss.unsent.Load())
		}
	}()
	go func() {
		defer s.wg.Done()
		ss.w.run(ctx) //nolint:errcheck // read back as ss.w.err
	}()
	ss.log.Debug("transport: stream opened")

	var result error
	select {
	case err := <-readDone:
		var fe frameError
		switch {
		case err == io.EOF: // the client closed its side: finish what is in flight
			ss.waitIdle()
		case errors.As(err, &fe):
			ss.log.Warn("transport: closing stream: malformed frame", zap.Error(err))
			result = status.Error(codes.InvalidArgument, err.Error())
		default: // gRPC already ended the stream with a status
			ss.log.Debug("transport: stream ended", zap.Error(err))
			result = err
		}
	case <-ss.w.done:
		ss.log.Debug("transport: stream send failed", zap.Error(ss.w.err))
		result = ss.w.err
	case <-ss.failed:
		return ss.abandon()
	case <-s.stopping:
		ss.waitIdle()
	}
	close(ss.w.flush)
	if !ss.awaitWriter() {
		return ss.abandon()
	}
	return result
}

// abandon ends the stream of a peer that does not read its replies. The
// writer may be stuck in SendMsg on flow control, and the stream cannot
// end while its frames wait: close the connection, which unblocks the
// writer and ends the stream.
func (ss *serverStream) abandon() error {
	if ss.srv.logs.allow(ss.peer) {
		ss.log.Warn("transport: closing connection: the peer does not read its replies",
			zap.Int("queued", len(ss.w.ch)), zap.Int64("unsent", ss.unsent.Load()))
	}
	if ss.conn != nil {
		_ = ss.conn.Close()
	}
	return status.Errorf(codes.ResourceExhausted,
		"transport: %d replies waiting: the peer does not read its replies", len(ss.w.ch))
}

// awaitWriter waits until the writer has sent what is queued and stopped.
// It reports false if the writer made no progress for SendStallTimeout.
func (ss *serverStream) awaitWriter() bool {
	stall := time.NewTimer(ss.srv.cfg.SendStallTimeout)
	defer stall.Stop()
	for {
		select {
		case <-ss.w.done:
			return true
		case <-ss.room:
			stall.Reset(ss.srv.cfg.SendStallTimeout)
		case <-stall.C:
			return false
		}
	}
}

// sent is the writer's report that n replies went out.
func (ss *serverStream) sent(n int) {
	ss.unsent.Add(int64(-n))
	if ss.conn != nil {
		ss.conn.unsent.Add(int64(-n))
	}
	select {
	case ss.room <- struct{}{}:
	default:
	}
}

// answerNow queues, from the reader goroutine, the reply to a request
// rejected at once (malformed, overloaded, server stopping). Such replies
// take at most QueueSize places of the queue, so that the replies of the
// admitted requests always find room: while the queue holds QueueSize
// envelopes, the reader waits (the peer's sends wait with it), and a
// writer that makes no progress for SendStallTimeout meanwhile means the
// peer does not read: the stream fails.
func (ss *serverStream) answerNow(id uint64, resp *Envelope) {
	if len(ss.w.ch) >= ss.srv.cfg.QueueSize {
		stall := time.NewTimer(ss.srv.cfg.SendStallTimeout)
		defer stall.Stop()
		for len(ss.w.ch) >= ss.srv.cfg.QueueSize {
			select {
			case <-ss.room:
				stall.Reset(ss.srv.cfg.SendStallTimeout)
			case <-stall.C:
				ss.fail()
				return
			case <-ss.failed:
				return
			case <-ss.w.done:
				return
			case <-ss.ctx.Done():
				return
			}
		}
	}
	ss.queue(id, resp)
}

// count counts a request that will be answered (until its reply is sent)
// and reports whether its stream and connection are within their caps.
func (ss *serverStream) count() bool {
	ok := ss.unsent.Add(1) <= int64(ss.srv.cfg.MaxInflightPerStream)
	if ss.conn != nil && ss.conn.unsent.Add(1) > int64(ss.srv.cfg.MaxInflightPerConnection) {
		ok = false
	}
	return ok
}

// fail ends the stream: a reply could not be queued.
func (ss *serverStream) fail() {
	ss.failOnce.Do(func() { close(ss.failed) })
}

// waitIdle stops admitting requests and waits until every admitted one is
// replied to, or the stream dies.
func (ss *serverStream) waitIdle() {
	ss.draining.Store(true)
	for ss.inflight.Load() > 0 {
		select {
		case <-ss.idle:
		case <-ss.ctx.Done():
			return
		}
	}
}

func (ss *serverStream) done() {
	if ss.inflight.Add(-1) == 0 && ss.draining.Load() {
		select {
		case ss.idle <- struct{}{}:
		default:
		}
	}
}

// read receives frames and dispatches their envelopes until the stream
// ends. A frame that cannot be decoded yields a frameError.
func (ss *serverStream) read() error {
	f := &inFrame{d: newFrameDecoder(ss.srv.cfg.Limits)}
	stats := &ss.srv.stats
	for {
		f.err = nil
		if err := ss.st.RecvMsg(f); err != nil {
			return err
		}
		if f.err != nil {
			stats.rejected.Add(1)
			ss.bad.charge(1)
			ss.slowDown()
			return frameError{f.err}
		}
		stats.framesReceived.Add(1)
		stats.envelopesReceived.Add(uint64(len(f.d.envs) + len(f.d.bad)))
		for _, b := range f.d.bad {
			stats.rejected.Add(1)
			ss.reject(b)
		}
		for _, e := range f.d.envs {
			ss.dispatch(e)
		}
		for _, id := range f.d.cancels {
			ss.cancel(id)
		}
		ss.slowDown()
	}
}

// slowDown makes the reader wait while the peer is past its budget of
// malformed requests (at most a second at a time, so that the stream's
// end and the server's stop are noticed).
func (ss *serverStream) slowDown() {
	d := ss.bad.deficit()
	if d <= 0 {
		return
	}
	t := time.NewTimer(min(d, time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ss.ctx.Done():
	case <-ss.srv.stopping:
	}
}

// reject answers a malformed request, if it can be identified and expects
// an answer.
func (ss *serverStream) reject(b badEnvelope) {
	if ss.srv.logs.allow(ss.peer) {
		ss.log.Warn("transport: rejected malformed envelope (further ones from this host logged at most once a second)",
			zap.Bool("identified", b.known), zap.Uint64("id", b.id), zap.Stringer("kind", b.kind), zap.Error(b.err))
	}
	if !b.known || b.kind == KindOneWay || b.kind == KindResponse {
		ss.bad.charge(1) // an answered one is charged by queue
		return
	}
	ss.count() // answered whatever the caps
	ss.answerNow(b.id, NewErrorResponse(b.err))
}

// queue checks resp, replacing it with an error response if it is over the
// limits, and queues it as the response to request id, which must have
// been counted in unsent. It never blocks: when the stream's queue is full
// it fails the stream and drops resp.
func (ss *serverStream) queue(id uint64, resp *Envelope) {
	lim := &ss.srv.cfg.Limits
	resp.Kind = KindResponse
	if err := checkEnvelope(resp, lim); err != nil {
		ss.log.Warn("transport: response replaced by an error", zap.Uint64("id", id), zap.Error(err))
		// The handler answered, so the call ran (unless its answer says
		// otherwise): the replacement must not read "did not run".
		o := grain.OutcomeFailed
		if resp.Status == StatusError && resp.ErrOutcome != 0 {
			o = resp.ErrOutcome
		}
		resp = NewErrorResponse(grain.WithOutcome(fmt.Errorf("transport: response: %w", err), o))
		resp.ErrMessage = truncate(resp.ErrMessage, lim.MaxHeaderSize/2)
		if err := checkEnvelope(resp, lim); err != nil {
			ss.log.Error("transport: cannot send response", zap.Uint64("id", id), zap.Error(err))
			ss.sent(1) // it never will be
			return
		}
	}
	if resp.Status == StatusError && resp.ErrOutcome == grain.OutcomeNotRun && malformedCode(resp.ErrCode) {
		// Refused before it ran: the peer sent something malformed. An
		// error a grain's turn returned is not the peer's fault.
		ss.bad.charge(1)
	}
	resp.setID(id)
	if !ss.w.offer(resp) {
		ss.fail()
		ss.log.Debug("transport: response dropped: the stream's queue is full", zap.Uint64("id", id))
	}
}

var (
	errStopping   = fmt.Errorf("transport: server stopping: %w", grain.ErrSiloUnavailable)
	errStreamBusy = fmt.Errorf("transport: too many requests in flight on this stream or connection: %w", grain.ErrOverloaded)
)

func (ss *serverStream) dispatch(e *Envelope) {
	if mt := ss.srv.cfg.MaxRequestTimeout; mt > 0 && (e.Timeout > mt || e.Timeout <= 0 && e.Kind == KindRequest) {
		e.Timeout = mt
	}
	switch e.Kind {
	case KindOneWay:
		if ss.draining.Load() {
			ss.log.Debug("transport: one-way request dropped: server stopping", zap.Stringer("target", e.Target))
			return
		}
		ss.srv.h.HandleRequest(ss.ctx, e, nil)
	case KindRequest:
		if !ss.count() {
			ss.srv.stats.overloaded.Add(1)
			ss.answerNow(e.ID, NewErrorResponse(errStreamBusy))
			return
		}
		ss.inflight.Add(1)
		if ss.draining.Load() {
			ss.done()
			ss.answerNow(e.ID, NewErrorResponse(errStopping))
			return
		}
		r := &replier{ss: ss, id: e.ID}
		r.rctx = requestCtx{Context: ss.ctx, server: true}
		if e.Timeout > 0 {
			r.rctx.deadline = time.Now().Add(e.Timeout)
		}
		ss.track(r)
		ss.srv.h.HandleRequest(&r.rctx, e, r)
	default:
		ss.srv.stats.rejected.Add(1)
		ss.bad.charge(1)
		if ss.srv.logs.allow(ss.peer) {
			ss.log.Warn("transport: unexpected envelope from client", zap.Stringer("kind", e.Kind), zap.Uint64("id", e.ID))
		}
	}
}

// track records r's request as in flight, for cancel. A client that
// reuses the id of a request in flight (a broken or hostile client) makes
// the older one uncancellable; nothing else.
func (ss *serverStream) track(r *replier) {
	ss.reqMu.Lock()
	if ss.reqs == nil {
		ss.reqs = make(map[uint64]*replier)
	}
	ss.reqs[r.id] = r
	ss.reqMu.Unlock()
}

// untrack forgets r's request once it is replied to.
func (ss *serverStream) untrack(r *replier) {
	ss.reqMu.Lock()
	if ss.reqs[r.id] == r {
		delete(ss.reqs, r.id)
	}
	ss.reqMu.Unlock()
}

// cancel cancels the context of request id if it is in flight; a
// cancellation of a request already answered (it crossed its reply), or
// of one this stream never admitted, is ignored. It keeps no state, so a
// flood of them costs a map lookup each.
func (ss *serverStream) cancel(id uint64) {
	ss.srv.stats.cancelsReceived.Add(1)
	ss.reqMu.Lock()
	r := ss.reqs[id]
	ss.reqMu.Unlock()
	if r != nil {
		ss.srv.stats.cancelled.Add(1)
		r.rctx.cancel()
	}
}

// replier sends the response to one request.
type replier struct {
	ss      *serverStream
	rctx    requestCtx // the handler's context
	id      uint64
	replied atomic.Bool
}

// Reply queues the handler's response, once.
func (r *replier) Reply(resp *Envelope) {
	if r.replied.Swap(true) {
		r.ss.log.Error("transport: reply called more than once; response dropped", zap.Uint64("id", r.id))
		return
	}
	if resp == nil {
		resp = NewErrorResponse(errors.New("transport: handler replied with a nil envelope"))
	}
	r.ss.untrack(r)
	r.ss.queue(r.id, resp)
	r.rctx.finish()
	r.ss.done()
}
