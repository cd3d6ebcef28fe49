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
	// (none if req.Timeout is 0); it is cancelled when the stream dies or
	// the server stops hard, and is not to be used after reply. reply is
	// non-nil and reply.Reply must be called exactly once, from any
	// goroutine, with the response (see NewResponse, NewErrorResponse,
	// NewNotHereResponse); the transport sets its Kind and ID and ignores
	// further calls. Reply may block while the stream's send queue is full,
	// at most until the stream ends.
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
	s := &Server{cfg: cfg, h: h, log: cfg.Logger, stopping: make(chan struct{})}
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxFrameSize),
		grpc.MaxSendMsgSize(cfg.MaxFrameSize),
		grpc.KeepaliveParams(kp),
		grpc.KeepaliveEnforcementPolicy(ep),
		grpc.WaitForHandlers(true),
	}, cfg.GRPCOptions...)
	s.gs = grpc.NewServer(opts...)
	s.gs.RegisterService(&serviceDesc, s)
	return s, nil
}

// Serve accepts connections on lis until Stop. It returns nil after Stop,
// and an error if lis fails or Serve is called after Stop.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.gs.Serve(lis); err != nil {
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
}

// connect runs one stream; it is the gRPC handler of Connect. It owns the
// stream's reader and writer goroutines and returns after the writer.
func (s *Server) connect(st grpc.ServerStream) error {
	ctx := st.Context()
	ss := &serverStream{srv: s, st: st, ctx: ctx, idle: make(chan struct{}, 1)}
	if p, ok := peer.FromContext(ctx); ok {
		ss.peer = p.Addr.String()
	}
	ss.log = s.log.With(zap.String("peer", ss.peer))
	ss.w = newWriter(&s.cfg.Limits, s.cfg.QueueSize, st.SendMsg, &s.stats)
	readDone := make(chan error, 1)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		readDone <- ss.read()
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
	case <-s.stopping:
		ss.waitIdle()
	}
	close(ss.w.flush)
	<-ss.w.done
	return result
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
	}
}

// reject answers a malformed request, if it can be identified and expects
// an answer.
func (ss *serverStream) reject(b badEnvelope) {
	ss.log.Warn("transport: rejected malformed envelope",
		zap.Bool("identified", b.known), zap.Uint64("id", b.id), zap.Stringer("kind", b.kind), zap.Error(b.err))
	if !b.known || b.kind == KindOneWay || b.kind == KindResponse {
		return
	}
	ss.queue(b.id, NewErrorResponse(b.err))
}

// queue checks resp, replacing it with an error response if it is over the
// limits, and queues it as the response to request id, blocking while the
// stream's queue is full, at most until the stream ends.
func (ss *serverStream) queue(id uint64, resp *Envelope) {
	lim := &ss.srv.cfg.Limits
	resp.Kind = KindResponse
	if err := checkEnvelope(resp, lim); err != nil {
		ss.log.Warn("transport: response replaced by an error", zap.Uint64("id", id), zap.Error(err))
		resp = NewErrorResponse(fmt.Errorf("transport: response: %w", err))
		resp.ErrMessage = truncate(resp.ErrMessage, lim.MaxHeaderSize/2)
		if err := checkEnvelope(resp, lim); err != nil {
			ss.log.Error("transport: cannot send response", zap.Uint64("id", id), zap.Error(err))
			return
		}
	}
	resp.setID(id)
	if err := ss.w.enqueue(ss.ctx, resp); err != nil {
		ss.log.Debug("transport: response dropped", zap.Uint64("id", id), zap.Error(err))
	}
}

var errStopping = fmt.Errorf("transport: server stopping: %w", grain.ErrSiloUnavailable)

func (ss *serverStream) dispatch(e *Envelope) {
	switch e.Kind {
	case KindOneWay:
		if ss.draining.Load() {
			ss.log.Debug("transport: one-way request dropped: server stopping", zap.Stringer("target", e.Target))
			return
		}
		ss.srv.h.HandleRequest(ss.ctx, e, nil)
	case KindRequest:
		ss.inflight.Add(1)
		if ss.draining.Load() {
			ss.done()
			ss.queue(e.ID, NewErrorResponse(errStopping))
			return
		}
		r := &replier{ss: ss, id: e.ID}
		r.rctx = requestCtx{Context: ss.ctx}
		var ctx context.Context = ss.ctx
		if e.Timeout > 0 {
			r.rctx.deadline = time.Now().Add(e.Timeout)
			ctx = &r.rctx
		}
		ss.srv.h.HandleRequest(ctx, e, r)
	default:
		ss.srv.stats.rejected.Add(1)
		ss.log.Warn("transport: unexpected envelope from client", zap.Stringer("kind", e.Kind), zap.Uint64("id", e.ID))
	}
}

// replier sends the response to one request.
type replier struct {
	ss      *serverStream
	rctx    requestCtx // the handler's context, if the request has a deadline
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
	r.ss.queue(r.id, resp)
	r.rctx.finish()
	r.ss.done()
}
