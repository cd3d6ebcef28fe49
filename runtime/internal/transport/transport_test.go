package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/granary-rt/granary/grain"
)

var errCustom = grain.NewError("transport_test.insufficient_funds", "bank: insufficient funds")

// Methods of the test handler.
const (
	mEcho       = "Echo"
	mOverloaded = "Overloaded"
	mCustom     = "Custom"
	mNotHere    = "NotHere"
	mHold       = "Hold"     // hand the request to the test through held
	mDeadline   = "Deadline" // reply with the time left until ctx's deadline
	mAsync      = "Async"    // echo from another goroutine
)

type heldCall struct {
	ctx   context.Context
	req   *Envelope
	reply Replier
}

// testHandler implements the methods above; one-way requests go to oneWay.
type testHandler struct {
	held   chan heldCall
	oneWay chan *Envelope
	wg     sync.WaitGroup // async replies
}

func newTestHandler() *testHandler {
	return &testHandler{held: make(chan heldCall, 1024), oneWay: make(chan *Envelope, 1024)}
}

func (h *testHandler) HandleRequest(ctx context.Context, req *Envelope, reply Replier) {
	if req.Kind == KindOneWay {
		if reply != nil {
			panic("reply for a one-way request")
		}
		h.oneWay <- req
		return
	}
	switch req.Method {
	case mEcho:
		reply.Reply(NewResponse(req.Body))
	case mOverloaded:
		reply.Reply(NewErrorResponse(fmt.Errorf("mailbox full: %w", grain.ErrOverloaded)))
	case mCustom:
		reply.Reply(NewErrorResponse(fmt.Errorf("withdraw 100: %w", errCustom)))
	case mNotHere:
		reply.Reply(NewNotHereResponse("silo-2", "10.0.0.2:7000"))
	case mHold:
		h.held <- heldCall{ctx, req, reply}
	case mDeadline:
		dl, ok := ctx.Deadline()
		if !ok {
			reply.Reply(NewResponse([]byte("none")))
			return
		}
		reply.Reply(NewResponse([]byte(strconv.FormatInt(int64(time.Until(dl)), 10))))
	case mAsync:
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			reply.Reply(NewResponse(req.Body))
		}()
	default:
		reply.Reply(NewErrorResponse(grain.ErrUnknownMethod))
	}
}

// startServer serves h on a random loopback port (or addr) until the test
// ends.
func startServer(tb testing.TB, cfg ServerConfig, h Handler, addr ...string) (*Server, string) {
	tb.Helper()
	a := "127.0.0.1:0"
	if len(addr) > 0 {
		a = addr[0]
	}
	lis, err := net.Listen("tcp", a)
	if err != nil {
		tb.Fatal(err)
	}
	return serveOn(tb, cfg, h, lis), lis.Addr().String()
}

func serveOn(tb testing.TB, cfg ServerConfig, h Handler, lis net.Listener) *Server {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb)
	}
	srv, err := NewServer(cfg, h)
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			tb.Errorf("Stop: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return srv
}

func newTestClient(tb testing.TB, cfg ClientConfig) *Client {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb)
	}
	c, err := NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func request(method string, body string) *Envelope {
	return &Envelope{Target: grain.ID{Type: "test.Grain", Key: "k"}, Method: method, Body: []byte(body)}
}

func TestRoundTripConcurrent(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)

	const callers, calls = 64, 100
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				body := fmt.Sprintf("caller %d call %d", g, i)
				m := mEcho
				if i%3 == 0 {
					m = mAsync
				}
				req := request(m, body)
				req.Chain = []string{"a/1"}
				req.Context = map[string]string{"caller": strconv.Itoa(g)}
				resp, err := c.Call(ctx, addr, req)
				if err != nil {
					errs <- err
					return
				}
				if string(resp.Body) != body || resp.Kind != KindResponse || resp.Status != StatusOK {
					errs <- fmt.Errorf("call %q got response %+v", body, resp)
					return
				}
			}
		}()
	}
	wg.Wait()
	h.wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cs, ss := c.Stats(), srv.Stats()
	t.Logf("client %+v", cs)
	t.Logf("server %+v", ss)
	if cs.EnvelopesSent != callers*calls || ss.EnvelopesReceived != callers*calls || ss.EnvelopesSent != callers*calls {
		t.Errorf("envelope counts: client %+v, server %+v", cs, ss)
	}
	// 64 concurrent callers keep both writers busy: frames carry batches.
	if cs.FramesSent >= cs.EnvelopesSent || ss.FramesSent >= ss.EnvelopesSent {
		t.Errorf("no batching: client %d envelopes in %d frames, server %d in %d",
			cs.EnvelopesSent, cs.FramesSent, ss.EnvelopesSent, ss.FramesSent)
	}
}

func TestOneWay(t *testing.T) {
	h := newTestHandler()
	_, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	const n = 100
	for i := range n {
		if err := c.Send(ctx, addr, request(mEcho, strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case req := <-h.oneWay:
			if string(req.Body) != strconv.Itoa(i) || req.Kind != KindOneWay || req.Target.Type != "test.Grain" ||
				req.Timeout <= 0 || req.Timeout > 20*time.Second {
				t.Fatalf("one-way %d: got %+v", i, req)
			}
		case <-ctx.Done():
			t.Fatalf("one-way %d not delivered", i)
		}
	}
}

func TestErrorResponses(t *testing.T) {
	_, addr := startServer(t, ServerConfig{}, newTestHandler())
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)

	_, err := c.Call(ctx, addr, request(mOverloaded, ""))
	var re *grain.RemoteError
	if !errors.As(err, &re) || !errors.Is(err, grain.ErrOverloaded) || re.Code != "overloaded" || re.Message != "mailbox full: grain: overloaded" {
		t.Errorf("overloaded: got %#v", err)
	}
	_, err = c.Call(ctx, addr, request(mCustom, ""))
	if !errors.Is(err, errCustom) || errors.Is(err, grain.ErrOverloaded) || err.Error() != "withdraw 100: bank: insufficient funds" {
		t.Errorf("custom: got %v", err)
	}
	_, err = c.Call(ctx, addr, request(mNotHere, ""))
	var nh *NotHereError
	if !errors.As(err, &nh) || !errors.Is(err, ErrNotHere) || nh.Redirect != (Redirect{SiloID: "silo-2", Address: "10.0.0.2:7000"}) {
		t.Errorf("not here: got %v", err)
	}
	_, err = c.Call(ctx, addr, request("Missing", ""))
	if !errors.Is(err, grain.ErrUnknownMethod) {
		t.Errorf("unknown method: got %v", err)
	}
}

// waitHeld receives n held calls.
func waitHeld(t *testing.T, h *testHandler, n int) []heldCall {
	t.Helper()
	var held []heldCall
	for range n {
		select {
		case hc := <-h.held:
			held = append(held, hc)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d calls reached the handler", len(held), n)
		}
	}
	return held
}

// startCalls starts n calls of method mHold with a long deadline; their
// errors arrive on the returned channel.
func startCalls(ctx context.Context, c *Client, addr string, n int, wg *sync.WaitGroup) chan error {
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Call(ctx, addr, request(mHold, strconv.Itoa(i)))
			errs <- err
		}()
	}
	return errs
}

// killListener records the connections it accepted, to cut them as a
// crashing process would.
type killListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *killListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *killListener) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, as after a crash
		}
		c.Close()
	}
}

func TestPeerLossFailsInFlightCallsPromptly(t *testing.T) {
	for _, how := range []string{"hard stop", "connections cut"} {
		t.Run(how, func(t *testing.T) {
			h := newTestHandler()
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			kl := &killListener{Listener: lis}
			addr := lis.Addr().String()
			srv := serveOn(t, ServerConfig{}, h, kl)
			c := newTestClient(t, ClientConfig{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			var wg sync.WaitGroup
			const n = 20
			errs := startCalls(ctx, c, addr, n, &wg)
			held := waitHeld(t, h, n)
			start := time.Now()
			switch how {
			case "hard stop":
				stopCtx, stop := context.WithCancel(context.Background())
				stop()
				if err := srv.Stop(stopCtx); !errors.Is(err, context.Canceled) {
					t.Errorf("hard Stop = %v, want context.Canceled", err)
				}
				for _, hc := range held {
					if hc.ctx.Err() == nil {
						t.Error("request ctx not cancelled by hard stop")
					}
				}
			case "connections cut":
				kl.kill()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				// The handler held them: they ran, the outcome is unknown.
				if !errors.Is(err, grain.ErrOutcomeUnknown) || grain.OutcomeOf(err) != grain.OutcomeUnknown {
					t.Errorf("in-flight call: got %v (%v), want ErrOutcomeUnknown", err, grain.OutcomeOf(err))
				}
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("calls failed after %v; want promptly", d)
			}
			for _, hc := range held { // late replies are dropped quietly
				hc.reply.Reply(NewResponse(nil))
			}
			if how == "hard stop" {
				// A new server on the same address: the next call re-dials.
				startServer(t, ServerConfig{}, newTestHandler(), addr)
			}
			resp, err := c.Call(ctx, addr, request(mEcho, "again"))
			if err != nil || string(resp.Body) != "again" {
				t.Fatalf("call after recovery: %v, %v", resp, err)
			}
		})
	}
}

func TestGracefulStopFinishesInFlightCalls(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)

	var wg sync.WaitGroup
	const n = 10
	errs := startCalls(ctx, c, addr, n, &wg)
	held := waitHeld(t, h, n)

	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop(ctx) }()
	// Stop waits for the replies of the calls in flight.
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned %v before the calls in flight were replied to", err)
	case <-time.After(100 * time.Millisecond):
	}
	for _, hc := range held {
		hc.reply.Reply(NewResponse(hc.req.Body))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("in-flight call: %v", err)
		}
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// A call sent while the client has not yet seen the server end its
	// stream may be lost with it (outcome unknown: the client cannot tell
	// whether the server read it); once it has, calls fail as not sent.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Call(ctx, addr, request(mEcho, ""))
		if errors.Is(err, grain.ErrSiloUnavailable) {
			break
		}
		if !errors.Is(err, grain.ErrOutcomeUnknown) || time.Now().After(deadline) {
			t.Fatalf("call after Stop: %v, want ErrSiloUnavailable", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDialFailure(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := newTestClient(t, ClientConfig{})
	start := time.Now()
	_, err = c.Call(testCtx(t), addr, request(mEcho, ""))
	if !errors.Is(err, grain.ErrSiloUnavailable) {
		t.Fatalf("got %v, want ErrSiloUnavailable", err)
	}
	if err := c.Send(testCtx(t), addr, request(mEcho, "")); !errors.Is(err, grain.ErrSiloUnavailable) {
		t.Fatalf("Send: got %v, want ErrSiloUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("dial failure took %v", d)
	}
	t.Log(err)
}

func TestTooLarge(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{Limits: Limits{MaxBodySize: 1 << 10}}, h)
	c := newTestClient(t, ClientConfig{Limits: Limits{MaxBodySize: 1 << 10}})
	ctx := testCtx(t)

	// Over the sender's limit: rejected before anything is sent.
	_, err := c.Call(ctx, addr, request(mEcho, string(make([]byte, 1<<10+1))))
	if !errors.Is(err, grain.ErrTooLarge) {
		t.Fatalf("oversized call: %v, want ErrTooLarge", err)
	}
	if err := c.Send(ctx, addr, request(mEcho, string(make([]byte, 1<<10+1)))); !errors.Is(err, grain.ErrTooLarge) {
		t.Fatalf("oversized send: %v, want ErrTooLarge", err)
	}
	if st := c.Stats(); st.FramesSent != 0 {
		t.Fatalf("client sent %d frames", st.FramesSent)
	}
	// Over the receiver's limit (a client with a larger one): answered.
	big := newTestClient(t, ClientConfig{})
	_, err = big.Call(ctx, addr, request(mEcho, string(make([]byte, 1<<10+1))))
	if !errors.Is(err, grain.ErrTooLarge) {
		t.Fatalf("call over the server's limit: %v, want ErrTooLarge", err)
	}
	errOver := err
	// A response over the limit is replaced by an error.
	h2 := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		reply.Reply(NewResponse(make([]byte, 1<<10+1)))
	})
	_, addr2 := startServer(t, ServerConfig{Limits: Limits{MaxBodySize: 1 << 10}}, h2)
	_, err = c.Call(ctx, addr2, request(mEcho, ""))
	if !errors.Is(err, grain.ErrTooLarge) {
		t.Fatalf("oversized response: %v, want ErrTooLarge", err)
	}
	// The handler answered: the call ran, whatever happened to its reply.
	if o := grain.OutcomeOf(err); o != grain.OutcomeFailed {
		t.Fatalf("outcome of an oversized response: %v, want %v", o, grain.OutcomeFailed)
	}
	// A request the server refused before handling it did not run.
	if o := grain.OutcomeOf(errOver); o != grain.OutcomeNotRun {
		t.Fatalf("outcome of a request over the server's limit: %v, want %v", o, grain.OutcomeNotRun)
	}
	if st := srv.Stats(); st.EnvelopesRejected != 1 {
		t.Fatalf("server rejected %d envelopes, want 1", st.EnvelopesRejected)
	}
}

// rawCodec sends byte slices as they are, under the transport's codec name.
type rawCodec struct{}

func (rawCodec) Name() string { return CodecName }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// rawStream opens a Connect stream that sends and receives raw bytes.
func rawStream(t *testing.T, addr string) grpc.ClientStream {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	st, err := cc.NewStream(testCtx(t), &serviceDesc.Streams[0], connectMethod, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMalformedFrameClosesStream(t *testing.T) {
	_, addr := startServer(t, ServerConfig{}, newTestHandler())
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	if _, err := c.Call(ctx, addr, request(mEcho, "")); err != nil {
		t.Fatal(err)
	}

	st := rawStream(t, addr)
	if err := st.SendMsg([]byte("\xc1 this is not msgpack")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	err := st.RecvMsg(&got)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("RecvMsg after garbage: %v, want InvalidArgument", err)
	}
	t.Log(err)

	// The server keeps serving the other stream.
	if resp, err := c.Call(ctx, addr, request(mEcho, "still here")); err != nil || string(resp.Body) != "still here" {
		t.Fatalf("call after a malformed frame: %v, %v", resp, err)
	}
}

func TestMalformedRequestsAnswered(t *testing.T) {
	h := newTestHandler()
	_, addr := startServer(t, ServerConfig{}, h)
	st := rawStream(t, addr)

	frame := frameOf(
		[]byte{0x92, 0x07, 0x0b},                                  // unknown kind 7, id 11
		appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 12}), // missing target
		appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 13, Target: grain.ID{Type: "T"}, Method: mEcho, Body: []byte("ok")}), // fine
		appendEnvelope(nil, &Envelope{Kind: KindOneWay, ID: 14}),                                                                  // bad, unanswered
		appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: 15, Target: grain.ID{Type: "T"}, Method: "M", Body: make([]byte, DefaultMaxBodySize+1)}),
	)
	if err := st.SendMsg(frame); err != nil {
		t.Fatal(err)
	}
	d := newFrameDecoder(testLimits())
	got := map[uint64]*Envelope{}
	for len(got) < 4 {
		var b []byte
		if err := st.RecvMsg(&b); err != nil {
			t.Fatalf("RecvMsg: %v (got %d responses)", err, len(got))
		}
		if err := d.decode(b); err != nil || len(d.bad) > 0 {
			t.Fatalf("decode response frame: %v, %+v", err, d.bad)
		}
		for _, e := range d.envs {
			got[e.ID] = e
		}
	}
	want := map[uint64]error{11: grain.ErrBadRequest, 12: grain.ErrBadRequest, 15: grain.ErrTooLarge}
	for id, sentinel := range want {
		if e := got[id]; e == nil || !errors.Is(e.Err(), sentinel) {
			t.Errorf("response to %d: %+v, want %v", id, e, sentinel)
		}
	}
	if e := got[13]; e == nil || e.Status != StatusOK || string(e.Body) != "ok" {
		t.Errorf("response to the good request: %+v", e)
	}
	if len(got) != 4 {
		t.Errorf("got responses %v, want 11, 12, 13, 15", got)
	}
}

func TestTimeouts(t *testing.T) {
	h := newTestHandler()
	_, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})

	t.Run("relative timeout reaches the handler", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.Call(ctx, addr, request(mDeadline, ""))
		if err != nil {
			t.Fatal(err)
		}
		left, err := strconv.ParseInt(string(resp.Body), 10, 64)
		if err != nil || left <= 0 || time.Duration(left) > 2*time.Second {
			t.Fatalf("handler saw %q left, want (0, 2s]", resp.Body)
		}
		req := request(mDeadline, "")
		req.Timeout = 300 * time.Millisecond // shorter than ctx's: kept
		resp, err = c.Call(ctx, addr, req)
		if err != nil {
			t.Fatal(err)
		}
		if left, _ := strconv.ParseInt(string(resp.Body), 10, 64); left <= 0 || time.Duration(left) > 300*time.Millisecond {
			t.Fatalf("handler saw %q left, want (0, 300ms]", resp.Body)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Call(ctx, addr, request(mHold, ""))
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, grain.ErrTimeout) {
			t.Fatalf("got %v, want DeadlineExceeded and ErrTimeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("timed out after %v", d)
		}
		hc := waitHeld(t, h, 1)[0]
		select {
		case <-hc.ctx.Done(): // the callee's context expires too
		case <-time.After(5 * time.Second):
			t.Fatal("handler ctx not done after the deadline")
		}
		hc.reply.Reply(NewResponse(nil)) // a late response is dropped
		// Expired before sending.
		if _, err := c.Call(ctx, addr, request(mEcho, "")); !errors.Is(err, grain.ErrTimeout) {
			t.Fatalf("call with an expired ctx: %v", err)
		}
	})

	// Deadlines that no timer of the caller's enforces: the client's
	// expiry loop fails the call, and the callee's context still ends.
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, func())
		req  func() *Envelope
	}{
		{"deadline of WithTimeout", func() (context.Context, func()) {
			return WithTimeout(context.Background(), 100*time.Millisecond)
		}, func() *Envelope { return request(mHold, "") }},
		{"request timeout without a ctx deadline", func() (context.Context, func()) {
			return context.Background(), func() {}
		}, func() *Envelope { r := request(mHold, ""); r.Timeout = 100 * time.Millisecond; return r }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, release := tc.ctx()
			defer release()
			start := time.Now()
			_, err := c.Call(ctx, addr, tc.req())
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, grain.ErrTimeout) {
				t.Fatalf("got %v, want DeadlineExceeded and ErrTimeout", err)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
				t.Fatalf("timed out after %v, want 100ms plus the expiry interval", d)
			}
			hc := waitHeld(t, h, 1)[0]
			select {
			case <-hc.ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("handler ctx not done after the deadline")
			}
			hc.reply.Reply(NewResponse(nil))
		})
	}

	// Cancellation, of ctx itself or of the parent of a WithTimeout
	// context (whose own deadline needs no timer).
	for _, tc := range []struct {
		name string
		ctx  func(parent context.Context) (context.Context, func())
	}{
		{"cancel", func(parent context.Context) (context.Context, func()) { return parent, func() {} }},
		{"cancel the parent of WithTimeout", func(parent context.Context) (context.Context, func()) {
			return WithTimeout(parent, time.Hour)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			defer cancel()
			ctx, release := tc.ctx(parent)
			defer release()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Call(ctx, addr, request(mHold, ""))
				errc <- err
			}()
			hc := waitHeld(t, h, 1)[0]
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, grain.ErrTimeout) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			hc.reply.Reply(NewResponse(nil))
		})
	}
}

func TestClientClose(t *testing.T) {
	h := newTestHandler()
	_, addr := startServer(t, ServerConfig{}, h)
	c, err := NewClient(ClientConfig{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := startCalls(ctx, c, addr, 5, &wg)
	held := waitHeld(t, h, 5)
	c.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, grain.ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
			t.Errorf("in-flight call at Close: %v", err)
		}
	}
	for _, hc := range held {
		hc.reply.Reply(NewResponse(nil))
	}
	if _, err := c.Call(ctx, addr, request(mEcho, "")); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	c.Close()
}

func TestConfigValidation(t *testing.T) {
	if _, err := NewServer(ServerConfig{}, nil); err == nil {
		t.Error("NewServer with a nil handler succeeded")
	}
	if _, err := NewServer(ServerConfig{QueueSize: -1}, newTestHandler()); err == nil {
		t.Error("NewServer with a negative queue succeeded")
	}
	if _, err := NewClient(ClientConfig{DialTimeout: -1}); err == nil {
		t.Error("NewClient with a negative dial timeout succeeded")
	}
}

func TestWriterBatchesWhileSending(t *testing.T) {
	lim := testLimits()
	lim.MaxEnvelopesPerFrame = 8
	sending := make(chan struct{})
	release := make(chan struct{})
	var frames [][]byte
	send := func(m any) error {
		f := m.(*outFrame)
		frames = append(frames, append([]byte(nil), *f.buf...))
		if len(frames) == 1 {
			close(sending)
			<-release
		}
		return nil
	}
	var stats counters
	w := newWriter(&lim, 64, send, &stats)
	done := make(chan error, 1)
	go func() { done <- w.run(context.Background()) }()

	env := func(i int) *Envelope {
		e := &Envelope{Kind: KindResponse, ID: uint64(i), Body: []byte{byte(i)}}
		if err := checkEnvelope(e, &lim); err != nil {
			t.Fatal(err)
		}
		return e
	}
	ctx := testCtx(t)
	w.enqueue(ctx, env(0)) // sent at once, alone
	<-sending
	for i := 1; i <= 20; i++ { // queued while the first frame is written
		if err := w.enqueue(ctx, env(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	close(w.flush)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var sizes []int
	id := uint64(0)
	d := newFrameDecoder(lim)
	for _, f := range frames {
		if err := d.decode(f); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(d.envs))
		for _, e := range d.envs {
			if e.ID != id {
				t.Fatalf("envelope %d out of order (want %d)", e.ID, id)
			}
			id++
		}
	}
	if want := []int{1, 8, 8, 4}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("frames carried %v envelopes, want %v", sizes, want)
	}
	if st := stats.snapshot(); st.FramesSent != 4 || st.EnvelopesSent != 21 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWriterFrameSizeLimit(t *testing.T) {
	lim := Limits{MaxFrameSize: 1 << 20, MaxBodySize: 256 << 10}
	if err := lim.validate("test"); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	send := func(m any) error {
		sizes = append(sizes, len(*m.(*outFrame).buf))
		return nil
	}
	var stats counters
	w := newWriter(&lim, 64, send, &stats)
	for i := range 10 {
		e := &Envelope{Kind: KindResponse, ID: uint64(i), Body: bytes.Repeat([]byte{1}, 256<<10)}
		if err := checkEnvelope(e, &lim); err != nil {
			t.Fatal(err)
		}
		w.ch <- e
	}
	close(w.flush)
	if err := w.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range sizes {
		if s > lim.MaxFrameSize {
			t.Fatalf("frame of %d bytes over the %d limit", s, lim.MaxFrameSize)
		}
	}
	if len(sizes) != 4 { // 3 + 3 + 3 + 1 bodies of 256 KiB under 1 MiB
		t.Fatalf("frame sizes %v", sizes)
	}
}

func TestReplyTwiceIsIgnored(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		reply.Reply(NewResponse([]byte("first")))
		reply.Reply(NewResponse([]byte("second")))
	})
	srv, addr := startServer(t, ServerConfig{Logger: zaptest.NewLogger(t, zaptest.Level(zapcore.DPanicLevel))}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	for range 3 {
		resp, err := c.Call(ctx, addr, request(mEcho, ""))
		if err != nil || string(resp.Body) != "first" {
			t.Fatalf("got %v, %v", resp, err)
		}
	}
	// The count moves just after a response went out: wait for it.
	st := srv.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.EnvelopesSent < 3 && time.Now().Before(deadline); st = srv.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.EnvelopesSent != 3 {
		t.Fatalf("server sent %d responses, want 3", st.EnvelopesSent)
	}
	// The in-flight accounting is intact: a graceful stop does not hang.
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}
