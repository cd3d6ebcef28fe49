package transport

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

// TestPushToClient: a handler keeps the stream a request came on and
// pushes one-way envelopes down it, which reach the client's OnPush in
// order, alongside ordinary calls; once the client closes, Push fails
// with ErrStreamClosed and Done is closed.
func TestPushToClient(t *testing.T) {
	streams := make(chan *Stream, 1)
	h := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		if req.Method == "register" {
			streams <- StreamOf(ctx)
		}
		reply.Reply(NewResponse(req.Body))
	})
	_, addr := startServer(t, ServerConfig{}, h)
	pushed := make(chan *Envelope, 100)
	c, err := NewClient(ClientConfig{OnPush: func(from string, e *Envelope) {
		if from != addr {
			t.Errorf("push from %s, want %s", from, addr)
		}
		pushed <- e
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	done, err := c.StreamDone(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, addr, request("register", "")); err != nil {
		t.Fatal(err)
	}
	st := <-streams
	if st == nil {
		t.Fatal("StreamOf(ctx) of a request is nil")
	}
	if StreamOf(context.Background()) != nil {
		t.Fatal("StreamOf of a plain ctx is not nil")
	}
	const n = 50
	for i := range n {
		if err := st.Push(&Envelope{Target: grain.ID{Type: "$observer", Key: "k"}, Method: "Receive", Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
		if i == n/2 { // calls still work while pushes flow
			if _, err := c.Call(ctx, addr, request(mEcho, "x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		select {
		case e := <-pushed:
			if e.Kind != KindOneWay || string(e.Body) != strconv.Itoa(i) || e.Target.Key != "k" || e.Method != "Receive" {
				t.Fatalf("push %d: got %+v", i, e)
			}
		case <-ctx.Done():
			t.Fatalf("push %d not delivered", i)
		}
	}
	if err := st.Push(&Envelope{Method: "Receive"}); !errors.Is(err, grain.ErrBadRequest) {
		t.Fatalf("push without a target type: %v, want ErrBadRequest", err)
	}

	select {
	case <-done:
		t.Fatal("StreamDone closed while the stream lives")
	default:
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("StreamDone not closed after Close")
	}
	select {
	case <-st.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server's Stream.Done not closed after the client closed")
	}
	if err := st.Push(&Envelope{Target: grain.ID{Type: "$observer", Key: "k"}, Method: "Receive"}); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("push after the client closed: %v, want ErrStreamClosed", err)
	}
}

// TestPushWithoutHandlerRejected: a client without OnPush rejects pushed
// envelopes and its calls carry on.
func TestPushWithoutHandlerRejected(t *testing.T) {
	streams := make(chan *Stream, 1)
	h := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		select {
		case streams <- StreamOf(ctx):
		default:
		}
		reply.Reply(NewResponse(req.Body))
	})
	_, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	if _, err := c.Call(ctx, addr, request(mEcho, "")); err != nil {
		t.Fatal(err)
	}
	st := <-streams
	if err := st.Push(&Envelope{Target: grain.ID{Type: "$observer", Key: "k"}, Method: "Receive"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().EnvelopesRejected == 0 {
		if time.Now().After(deadline) {
			t.Fatal("pushed envelope not rejected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if resp, err := c.Call(ctx, addr, request(mEcho, "after")); err != nil || string(resp.Body) != "after" {
		t.Fatalf("call after a rejected push: %v, %v", resp, err)
	}
}

// TestPushBounded: at most MaxPushQueued pushes wait on a stream; more
// fail with ErrOverloaded at once, and they never take the places the
// queue keeps for replies.
func TestPushBounded(t *testing.T) {
	cfg := ServerConfig{}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ss := &serverStream{srv: &Server{cfg: cfg}, ctx: t.Context(), failed: make(chan struct{})}
	// A writer that is not running: nothing leaves the queue.
	ss.w = newWriter(&cfg.Limits, streamQueueSize(&cfg), nil, &counters{})
	st := &Stream{ss: ss}
	push := func() error {
		return st.Push(&Envelope{Target: grain.ID{Type: "$observer", Key: "k"}, Method: "Receive"})
	}
	for i := range MaxPushQueued {
		if err := push(); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if err := push(); !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("push %d: %v, want ErrOverloaded", MaxPushQueued+1, err)
	}
	for i := range cfg.MaxInflightPerStream + cfg.QueueSize {
		if !ss.w.offer(NewResponse(nil)) {
			t.Fatalf("reply %d found no room: pushes took the places of replies", i)
		}
	}
	for range 10 { // the writer sends ten pushes
		<-ss.w.ch
	}
	ss.sent(0, 10)
	if err := push(); err != nil {
		t.Fatalf("push after some were sent: %v", err)
	}
}
