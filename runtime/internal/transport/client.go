package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/granary-rt/granary/grain"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("transport: client closed")

// ErrNotSent marks a failure that happened before the request left this
// process (the peer could not be dialed): the request did not run, so the
// caller may safely send it elsewhere. It comes wrapped with
// grain.ErrSiloUnavailable.
var ErrNotSent = errors.New("transport: request not sent")

// Client sends requests to Servers. It keeps one connection with one stream
// per address, dialed on first use and re-dialed on the first use after it
// broke. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	log *zap.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex // serializes dials with Close
	closed bool
	peers  sync.Map // address -> *peerConn

	wg    sync.WaitGroup // one per peerConn goroutine and stream writer
	stats counters
}

// NewClient returns a Client. It does not connect until the first call.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel}
	c.wg.Add(1)
	go c.expireLoop()
	return c, nil
}

// expiryInterval is how often the client fails the calls whose deadline
// passed: a call times out at most this late.
const expiryInterval = 10 * time.Millisecond

// expireLoop enforces the deadlines of calls in flight. Call does not arm a
// timer per call: a request's deadline is in its Timeout, and this loop
// fails the calls past it (a caller whose ctx has its own Done channel
// also stops waiting when that closes).
func (c *Client) expireLoop() {
	defer c.wg.Done()
	t := time.NewTicker(expiryInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		now := monoNow()
		c.peers.Range(func(_, v any) bool {
			p := v.(*peerConn)
			select {
			case <-p.ready:
				if p.s != nil {
					p.s.expire(now)
				}
			default:
			}
			return true
		})
	}
}

// monoEpoch anchors monoNow.
var monoEpoch = time.Now()

// monoNow is a monotonic clock reading in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// errExpired completes a call whose deadline passed; Call reports it as a
// timeout naming the call.
var errExpired = errors.New("transport: deadline passed")

// Close fails the calls in flight with grain.ErrSiloUnavailable (and
// ErrClosed), closes every connection and waits for the client's
// goroutines. Later calls fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Stats returns the client's traffic counts.
func (c *Client) Stats() Stats { return c.stats.snapshot() }

// Call sends req to the server at addr and waits for the response. It sets
// req.Kind and req.ID, and sets req.Timeout to the time left until ctx's
// deadline if that is shorter; it takes ownership of req.
//
// Errors:
//   - a StatusError response: the *grain.RemoteError it carries, which
//     errors.Is-matches the sentinel with its code;
//   - a StatusNotHere response: a *NotHereError (matches ErrNotHere);
//   - req over the limits: an error wrapping grain.ErrTooLarge, or
//     grain.ErrBadRequest if malformed, before anything is sent;
//   - ctx's deadline passed: an error matching grain.ErrTimeout and
//     context.DeadlineExceeded; ctx cancelled: one matching
//     context.Canceled. The request may still run. When ctx is cancelled
//     (not past its deadline, which the server knows) after the request
//     was queued, Call also queues a cancellation of it, if the stream's
//     queue has room: the server cancels the request's context if it is
//     still in flight.
//   - the peer cannot be dialed, or its stream had already broken: an
//     error wrapping grain.ErrSiloUnavailable; the request was not sent.
//   - the stream broke after the request was queued and before the
//     response arrived: an error wrapping grain.ErrOutcomeUnknown, returned
//     as soon as the loss is noticed. The request may or may not have run.
func (c *Client) Call(ctx context.Context, addr string, req *Envelope) (*Envelope, error) {
	req.Kind = KindRequest
	s, expires, err := c.prepare(ctx, addr, req)
	if err != nil {
		return nil, err
	}
	p := pendingPool.Get().(*pendingCall)
	p.expires = expires
	id := s.nextID.Add(1)
	req.setID(id)
	s.mu.Lock()
	if s.pending == nil {
		err := s.err
		s.mu.Unlock()
		pendingPool.Put(p)
		return nil, err
	}
	s.pending[id] = p
	s.mu.Unlock()

	if err := s.w.enqueue(ctx, req); err != nil && err != errWriterClosed {
		if s.forget(id) {
			pendingPool.Put(p)
			return nil, c.ctxError(ctx, addr, req)
		}
		// A response or the stream's failure is on its way.
	}
	// If the writer stopped, the stream is failing and fails p. The
	// deadline is enforced by expireLoop; a context of WithTimeout is
	// waited on for its parent's cancellation only, so that it never needs
	// a timer.
	done := ctx.Done
	if rc, ok := ctx.(*requestCtx); ok && !rc.server {
		done = rc.Context.Done
	}
	select {
	case <-p.done:
	case <-done():
		if s.forget(id) {
			pendingPool.Put(p)
			err := c.ctxError(ctx, addr, req)
			if errors.Is(err, context.Canceled) {
				s.sendCancel(id)
			}
			return nil, err
		}
		<-p.done
	}
	resp, err := p.resp, p.err
	p.resp, p.err = nil, nil
	pendingPool.Put(p)
	if err == errExpired {
		return nil, c.timeoutError(addr, req)
	}
	if err != nil {
		return nil, err
	}
	if err := resp.Err(); err != nil {
		return nil, err
	}
	return resp, nil
}

// Send sends the one-way request req to the server at addr. It returns once
// req is queued on the stream; delivery is at most once, and nothing tells
// whether req arrived. It sets req.Kind, req.ID and req.Timeout as Call does
// and takes ownership of req. It never waits for room in the stream's
// queue: when the queue is full (QueueSize envelopes), it fails at once
// with an error wrapping grain.ErrOverloaded. Other errors are those of
// Call before the request is sent.
func (c *Client) Send(ctx context.Context, addr string, req *Envelope) error {
	req.Kind = KindOneWay
	s, _, err := c.prepare(ctx, addr, req)
	if err != nil {
		return err
	}
	req.setID(s.nextID.Add(1))
	if !s.w.offer(req) {
		select {
		case <-s.w.done:
			return unavailable(addr, errWriterClosed)
		default:
		}
		// Nobody waits for a one-way call (a grain turn may be sending
		// it): refuse it rather than wait for the network.
		return fmt.Errorf("transport: one-way %s method %s to %s: %d envelopes queued on the stream: %w",
			req.Target, req.Method, addr, cap(s.w.ch), grain.ErrOverloaded)
	}
	return nil
}

// prepare sets req's timeout, checks it and returns the stream to addr and
// the monoNow() reading past which the call has expired (math.MaxInt64: no
// timeout). It reads the clock once.
func (c *Client) prepare(ctx context.Context, addr string, req *Envelope) (*clientStream, int64, error) {
	var now time.Time
	if dl, ok := ctx.Deadline(); ok {
		now = time.Now()
		left := dl.Sub(now)
		if left <= 0 {
			return nil, 0, c.ctxError(ctx, addr, req)
		}
		if req.Timeout == 0 || left < req.Timeout {
			req.Timeout = left
		}
	}
	expires := int64(math.MaxInt64)
	if req.Timeout > 0 {
		if now.IsZero() {
			now = time.Now()
		}
		expires = int64(now.Sub(monoEpoch) + req.Timeout)
	}
	if err := checkEnvelope(req, &c.cfg.Limits); err != nil {
		return nil, 0, fmt.Errorf("transport: %s to %s method %s at %s: %w", req.Kind, req.Target, req.Method, addr, err)
	}
	s, err := c.stream(ctx, addr)
	return s, expires, err
}

// StreamDone returns a channel closed when the stream to addr that is
// live now ends (it broke, or the Client closed), dialing addr if there
// is none. A call made while that channel is open, and that completed
// before it closed, went over that stream: this is how a caller ties
// what it registered with a server through a call (which pushes to it
// there, see Stream.Push) to the stream's life.
func (c *Client) StreamDone(ctx context.Context, addr string) (<-chan struct{}, error) {
	s, err := c.stream(ctx, addr)
	if err != nil {
		return nil, err
	}
	return s.ctx.Done(), nil
}

// ctxError is the error of a call whose ctx ended.
func (c *Client) ctxError(ctx context.Context, addr string, req *Envelope) error {
	err := ctx.Err()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return c.timeoutError(addr, req)
	}
	return fmt.Errorf("transport: %s method %s at %s: %w", req.Target, req.Method, addr, err)
}

// timeoutError is the error of a call whose deadline passed.
func (c *Client) timeoutError(addr string, req *Envelope) error {
	return fmt.Errorf("transport: %w", grain.Timeout(fmt.Sprintf("%s method %s at %s", req.Target, req.Method, addr)))
}

func unavailable(addr string, cause error) error {
	return fmt.Errorf("transport: %s: %w: %w", addr, grain.ErrSiloUnavailable, cause)
}

// lost is the error of a call in flight on a stream that broke: it may
// have reached the peer and run.
func lost(addr string, cause error) error {
	return fmt.Errorf("transport: %s: %w: %w", addr, grain.ErrOutcomeUnknown, cause)
}

// refused is the error of the calls of a stream the server refused to
// authenticate (codes.Unauthenticated): a server refuses a stream before
// it reads any request, so none of them ran. The status's message says
// why.
func refused(addr string, cause error) error {
	msg := cause.Error()
	if st, ok := status.FromError(cause); ok {
		msg = st.Message()
	}
	return fmt.Errorf("transport: %s: %w: %s", addr, grain.ErrUnauthenticated, msg)
}

// pendingCall is a call waiting for its response. Whoever removes it from
// the stream's pending map completes it: the reader with the response, the
// stream's failure with an error, or the caller giving up (which then does
// not wait).
type pendingCall struct {
	done    chan struct{} // buffered(1)
	expires int64         // monoNow() past which it fails; set before it is pending
	resp    *Envelope
	err     error
}

var pendingPool = sync.Pool{New: func() any { return &pendingCall{done: make(chan struct{}, 1)} }}

// peerConn is the connection to one address: dialed once, then serving one
// stream until it breaks. Its goroutine dials, runs the stream's reader, and
// cleans up.
type peerConn struct {
	addr  string
	ready chan struct{} // closed when the dial finished; s or err is set
	s     *clientStream
	err   error
}

// stream returns the live stream to addr, dialing if there is none.
func (c *Client) stream(ctx context.Context, addr string) (*clientStream, error) {
	v, ok := c.peers.Load(addr)
	if !ok {
		var err error
		if v, err = c.dial(addr); err != nil {
			return nil, err
		}
	}
	p := v.(*peerConn)
	select {
	case <-p.ready:
	default:
		select {
		case <-p.ready:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("transport: dial %s: %w", addr, grain.Timeout("dial "+addr))
			}
			return nil, fmt.Errorf("transport: dial %s: %w", addr, ctx.Err())
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	return p.s, nil
}

// dial returns the peerConn for addr, starting one if there is none.
func (c *Client) dial(addr string) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, unavailable(addr, ErrClosed)
	}
	p := &peerConn{addr: addr, ready: make(chan struct{})}
	if v, loaded := c.peers.LoadOrStore(addr, p); loaded {
		return v, nil
	}
	c.wg.Add(1)
	go c.runPeer(p)
	return p, nil
}

// runPeer dials p, then runs its stream until the stream breaks.
func (c *Client) runPeer(p *peerConn) {
	defer c.wg.Done()
	s, err := c.open(p)
	if err != nil {
		p.err = fmt.Errorf("transport: dial %s: %w: %w: %w", p.addr, grain.ErrSiloUnavailable, ErrNotSent, err)
		if status.Code(err) == codes.Unauthenticated {
			// Our credentials could not be sent (the token source
			// failed): no other server would take them either.
			p.err = refused(p.addr, err)
		}
		c.log.Warn("transport: dial failed", zap.String("addr", p.addr), zap.Error(err))
		c.peers.CompareAndDelete(p.addr, p)
		close(p.ready)
		return
	}
	p.s = s
	close(p.ready)
	s.run()
}

// open connects to p.addr and opens the stream.
func (c *Client) open(p *peerConn) (*clientStream, error) {
	lim := c.cfg.MaxFrameSize
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if c.cfg.Credentials != nil {
		creds = c.cfg.Credentials
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.cfg.KeepaliveTime,
			Timeout:             c.cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(lim), grpc.MaxCallSendMsgSize(lim)),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient("passthrough:///"+p.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	timer := time.AfterFunc(c.cfg.DialTimeout, cancel)
	st, err := cc.NewStream(ctx, &serviceDesc.Streams[0], connectMethod, grpc.ForceCodecV2(codec{}))
	timedOut := !timer.Stop()
	if err != nil || timedOut || c.ctx.Err() != nil {
		cancel()
		cc.Close()
		switch {
		case c.ctx.Err() != nil:
			return nil, ErrClosed
		case timedOut:
			return nil, fmt.Errorf("no stream after the dial timeout (%v)%s", c.cfg.DialTimeout, c.tlsHint(err))
		}
		return nil, fmt.Errorf("%w%s", err, c.tlsHint(err))
	}
	s := &clientStream{
		c:       c,
		p:       p,
		log:     c.log.With(zap.String("addr", p.addr)),
		cc:      cc,
		st:      st,
		ctx:     ctx,
		cancel:  cancel,
		pending: make(map[uint64]*pendingCall),
	}
	s.w = newWriter(&c.cfg.Limits, c.cfg.QueueSize, st.SendMsg, &c.stats)
	s.log.Debug("transport: stream opened")
	return s, nil
}

// clientStream is the client's end of one Connect stream.
type clientStream struct {
	c      *Client
	p      *peerConn
	log    *zap.Logger
	cc     *grpc.ClientConn
	st     grpc.ClientStream
	ctx    context.Context
	cancel context.CancelFunc
	w      *writer
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*pendingCall // nil once the stream failed
	err     error                   // why it failed

	failOnce sync.Once
}

// run runs the stream's writer goroutine and its reader until the stream
// breaks, then fails the calls in flight and closes the connection.
func (s *clientStream) run() {
	s.c.wg.Add(1)
	go func() {
		defer s.c.wg.Done()
		err := s.w.run(s.ctx)
		if err != nil && err != io.EOF && s.ctx.Err() == nil {
			// io.EOF: the stream ended; the reader learns its status.
			s.fail(fmt.Errorf("send: %w", err))
		}
	}()
	s.fail(s.read())
	<-s.w.done
	s.cc.Close()
}

// read receives frames and completes the calls their responses answer.
func (s *clientStream) read() error {
	f := &inFrame{d: newFrameDecoder(s.c.cfg.Limits)}
	stats := &s.c.stats
	for {
		f.err = nil
		if err := s.st.RecvMsg(f); err != nil {
			if err == io.EOF {
				return errors.New("stream closed by the server")
			}
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
			s.log.Warn("transport: rejected malformed envelope", zap.Uint64("id", b.id), zap.Error(b.err))
			if b.known && b.kind == KindResponse {
				err := fmt.Errorf("transport: response rejected: %w", b.err)
				if errors.Is(b.err, grain.ErrTooLarge) {
					// The server answered with a result: the call ran.
					err = grain.WithOutcome(err, grain.OutcomeFailed)
				}
				s.complete(b.id, nil, err)
			}
		}
		for _, e := range f.d.envs {
			if e.Kind == KindOneWay && s.c.cfg.OnPush != nil {
				s.c.cfg.OnPush(s.p.addr, e)
				continue
			}
			if e.Kind != KindResponse {
				stats.rejected.Add(1)
				s.log.Warn(errNoPushHandler.Error(), zap.Stringer("kind", e.Kind), zap.Uint64("id", e.ID))
				continue
			}
			s.complete(e.ID, e, nil)
		}
	}
}

// complete completes the call with the given id, if it still waits.
func (s *clientStream) complete(id uint64, resp *Envelope, err error) {
	s.mu.Lock()
	p := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if p == nil {
		return // its caller gave up
	}
	p.resp, p.err = resp, err
	p.done <- struct{}{}
}

// expire fails the calls whose deadline is before now.
func (s *clientStream) expire(now int64) {
	var expired []*pendingCall
	s.mu.Lock()
	for id, p := range s.pending {
		if p.expires < now {
			delete(s.pending, id)
			expired = append(expired, p)
		}
	}
	s.mu.Unlock()
	for _, p := range expired {
		p.err = errExpired
		p.done <- struct{}{}
	}
}

// sendCancel queues the cancellation of request id, if the queue has
// room: without it the request runs on until its deadline, which is all
// the server would have known before cancellations existed.
func (s *clientStream) sendCancel(id uint64) {
	if s.w.offer(newCancel(id)) {
		s.c.stats.cancelsSent.Add(1)
		return
	}
	s.log.Debug("transport: cancellation not sent: the stream's queue is full", zap.Uint64("id", id))
}

// forget removes a pending call whose caller gives up. It reports false if
// the call was already completed or is being completed.
func (s *clientStream) forget(id uint64) bool {
	s.mu.Lock()
	_, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	return ok
}

// fail marks the stream broken, once: the next call dials again, the calls
// in flight fail now with an error wrapping grain.ErrOutcomeUnknown, and a
// call that finds the stream broken before it is sent fails with one
// wrapping grain.ErrSiloUnavailable.
func (s *clientStream) fail(cause error) {
	s.failOnce.Do(func() {
		if s.c.ctx.Err() != nil {
			cause = fmt.Errorf("%w: %w", ErrClosed, cause)
			s.log.Debug("transport: stream closed", zap.Error(cause))
		} else {
			s.log.Warn("transport: stream lost", zap.Error(cause))
		}
		var err, later error
		if status.Code(cause) == codes.Unauthenticated {
			err = refused(s.p.addr, cause)
			later = err
		} else {
			cause = fmt.Errorf("stream lost: %w", cause)
			err, later = lost(s.p.addr, cause), unavailable(s.p.addr, cause)
		}
		s.c.peers.CompareAndDelete(s.p.addr, s.p)
		s.mu.Lock()
		pending := s.pending
		s.pending, s.err = nil, later
		s.mu.Unlock()
		s.cancel()
		for _, p := range pending {
			p.err = err
			p.done <- struct{}{}
		}
	})
}
