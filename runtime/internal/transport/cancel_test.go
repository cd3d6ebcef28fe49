package transport

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

// holdOne sends a mHold call with ctx on its own goroutine and returns the
// call as the handler received it, and the channel Call's error arrives on.
func holdOne(t *testing.T, ctx context.Context, c *Client, addr string, h *testHandler) (heldCall, <-chan error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, addr, request(mHold, "x"))
		errc <- err
	}()
	select {
	case hc := <-h.held:
		return hc, errc
	case err := <-errc:
		t.Fatalf("call returned before the handler held it: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never received the call")
	}
	panic("unreachable")
}

// waitDone waits for ctx to end and returns how long that took.
func waitDone(t *testing.T, ctx context.Context, since time.Time) time.Duration {
	t.Helper()
	select {
	case <-ctx.Done():
		return time.Since(since)
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
	return 0
}

func TestCancelReachesHandler(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the call's deadline; 0: none
	}{{"deadline", 30 * time.Second}, {"no-deadline", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler()
			srv, addr := startServer(t, ServerConfig{}, h)
			c := newTestClient(t, ClientConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.timeout > 0 {
				var stop context.CancelFunc
				ctx, stop = context.WithTimeout(ctx, tc.timeout)
				defer stop()
			}
			hc, errc := holdOne(t, ctx, c, addr, h)
			if _, ok := hc.ctx.Deadline(); ok != (tc.timeout > 0) {
				t.Fatalf("handler's ctx has a deadline: %v, want %v", ok, tc.timeout > 0)
			}
			start := time.Now()
			cancel()
			took := waitDone(t, hc.ctx, start)
			t.Logf("handler's ctx done %v after the caller's cancel", took)
			if err := hc.ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Fatalf("handler's ctx.Err() = %v, want context.Canceled", err)
			}
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("Call = %v, want context.Canceled", err)
			}
			// The handler still replies; the client, which forgot the call,
			// drops the answer.
			hc.reply.Reply(NewResponse(nil))
			if _, err := c.Call(testCtx(t), addr, request(mEcho, "after")); err != nil {
				t.Fatalf("call after a cancellation: %v", err)
			}
			// The counters move just after the frames do: wait for them.
			cs, ss := c.Stats(), srv.Stats()
			for deadline := time.Now().Add(5 * time.Second); (cs.EnvelopesSent < 2 || ss.EnvelopesReceived < 2 ||
				ss.CancelsReceived < 1 || ss.RequestsCancelled < 1) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
				cs, ss = c.Stats(), srv.Stats()
			}
			if cs.CancelsSent != 1 || ss.CancelsReceived != 1 || ss.RequestsCancelled != 1 {
				t.Fatalf("cancellations: client sent %d; server received %d, cancelled %d; want 1, 1, 1",
					cs.CancelsSent, ss.CancelsReceived, ss.RequestsCancelled)
			}
			if cs.EnvelopesSent != 2 || ss.EnvelopesReceived != 2 {
				t.Fatalf("envelopes: client sent %d, server received %d; want 2 (a cancellation is not one)",
					cs.EnvelopesSent, ss.EnvelopesReceived)
			}
		})
	}
}

// A call whose deadline passes sends no cancellation: the server has the
// deadline already.
func TestCancelNotSentAtDeadline(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	hc, errc := holdOne(t, ctx, c, addr, h)
	if err := <-errc; !errors.Is(err, grain.ErrTimeout) {
		t.Fatalf("Call = %v, want a timeout", err)
	}
	waitDone(t, hc.ctx, time.Now())
	if err := hc.ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler's ctx.Err() = %v, want DeadlineExceeded", err)
	}
	hc.reply.Reply(NewResponse(nil))
	if cs, ss := c.Stats(), srv.Stats(); cs.CancelsSent != 0 || ss.CancelsReceived != 0 {
		t.Fatalf("cancellations sent %d, received %d; want none", cs.CancelsSent, ss.CancelsReceived)
	}
}

// Cancellations of requests already answered, of ids never sent, and
// repeated ones are ignored: they cancel nothing else and leave nothing
// behind.
func TestCancelUnknownIgnored(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	hc, errc := holdOne(t, ctx, c, addr, h)
	if _, err := c.Call(ctx, addr, request(mEcho, "answered")); err != nil {
		t.Fatal(err)
	}
	s, err := c.stream(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	held := s.nextID.Load() - 1 // the held call's id; the echo's is next
	const flood = 20000
	sent := 0
	for i := range flood {
		id := uint64(1<<40 + i)
		switch i {
		case 0, 1:
			id = held + 1 // answered, twice
		}
		for !s.w.offer(newCancel(id)) {
			time.Sleep(time.Millisecond) // the queue is full: let it drain
		}
		sent++
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().CancelsReceived < uint64(sent) {
		if time.Now().After(deadline) {
			t.Fatalf("server received %d of %d cancellations", srv.Stats().CancelsReceived, sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := hc.ctx.Err(); err != nil {
		t.Fatalf("the held call's ctx ended: %v; only its own cancellation may end it", err)
	}
	if n := srv.Stats().RequestsCancelled; n != 0 {
		t.Fatalf("%d requests cancelled, want 0", n)
	}
	// The stream works and the held call is still answered.
	if _, err := c.Call(ctx, addr, request(mEcho, "after")); err != nil {
		t.Fatal(err)
	}
	hc.reply.Reply(NewResponse([]byte("held")))
	if err := <-errc; err != nil {
		t.Fatalf("held call: %v", err)
	}
	// A cancellation of it now comes too late and is ignored.
	if !s.w.offer(newCancel(held)) {
		t.Fatal("queue full")
	}
	if _, err := c.Call(ctx, addr, request(mEcho, "last")); err != nil {
		t.Fatal(err)
	}
	if n := srv.Stats().RequestsCancelled; n != 0 {
		t.Fatalf("%d requests cancelled, want 0", n)
	}
}

// One-way requests are never cancelled: Send sends no cancellation, and
// the server does not track them.
func TestCancelOneWayNotTracked(t *testing.T) {
	h := newTestHandler()
	srv, addr := startServer(t, ServerConfig{}, h)
	c := newTestClient(t, ClientConfig{})
	ctx, cancel := context.WithCancel(testCtx(t))
	req := request("Notify", "x")
	if err := c.Send(ctx, addr, req); err != nil {
		t.Fatal(err)
	}
	id := req.ID
	cancel()
	var got *Envelope
	select {
	case got = <-h.oneWay:
	case <-time.After(10 * time.Second):
		t.Fatal("one-way request not delivered")
	}
	s, err := c.stream(testCtx(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	s.w.offer(newCancel(id))
	if _, err := c.Call(testCtx(t), addr, request(mEcho, "x")); err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.RequestsCancelled != 0 || c.Stats().CancelsSent != 0 {
		t.Fatalf("one-way %d: %+v / %+v", got.ID, st, c.Stats())
	}
}

func TestFrameCancellations(t *testing.T) {
	lim := fuzzLimits()
	req := request(mEcho, "x")
	req.Kind, req.ID = KindRequest, 3
	if err := checkEnvelope(req, &lim); err != nil {
		t.Fatal(err)
	}
	envs := []*Envelope{newCancel(1), req, newCancel(1 << 50)}
	total := 0
	for _, e := range envs {
		total += e.size
	}
	b := appendFrame(nil, envs)
	if n, c := frameSize(envs, total); len(b) != n || c != 2 {
		t.Fatalf("frame is %d bytes; frameSize says %d bytes, %d cancellations", len(b), n, c)
	}
	d := newFrameDecoder(lim)
	if err := d.decode(b); err != nil {
		t.Fatal(err)
	}
	if len(d.envs) != 1 || d.envs[0].ID != 3 || len(d.cancels) != 2 || d.cancels[0] != 1 || d.cancels[1] != 1<<50 {
		t.Fatalf("decoded %d envelopes, cancellations %v", len(d.envs), d.cancels)
	}
	// The decoder forgets a frame's cancellations with the frame.
	if err := d.decode(appendFrame(nil, []*Envelope{req})); err != nil || len(d.cancels) != 0 {
		t.Fatalf("next frame: %v, cancellations %v", err, d.cancels)
	}
	for name, frame := range map[string][]byte{
		"not an array":  {0x93, frameVersion, 0x90, 0xa1, 'x'},
		"not uints":     {0x93, frameVersion, 0x90, 0x91, 0xa1, 'x'},
		"negative":      {0x93, frameVersion, 0x90, 0x91, 0xff},
		"over the cap":  fuzzSeeds()["bad-cancel-count"],
		"truncated ids": {0x93, frameVersion, 0x90, 0x92, 0x01},
	} {
		if err := newFrameDecoder(lim).decode(frame); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	// Fields after the cancellations are skipped, as fields after the
	// envelopes always were (which is why a receiver from before
	// cancellations reads these frames).
	if err := newFrameDecoder(lim).decode([]byte{0x94, frameVersion, 0x90, 0x91, 0x05, 0xa1, 'x'}); err != nil {
		t.Fatalf("trailing field: %v", err)
	}
}

// A request context over the header limit is refused as it is read,
// before its entries are copied.
func TestDecodeContextBytesBounded(t *testing.T) {
	lim := fuzzLimits() // 1 KiB headers
	e := &Envelope{Kind: KindRequest, ID: 9, Target: grain.ID{Type: "T"}, Method: "M",
		Context: map[string]string{"k": string(make([]byte, 2*lim.MaxHeaderSize))}}
	d := newFrameDecoder(lim)
	if err := d.decode(appendFrame(nil, []*Envelope{e})); err != nil {
		t.Fatal(err)
	}
	if len(d.envs) != 0 || len(d.bad) != 1 || !errors.Is(d.bad[0].err, grain.ErrTooLarge) || d.bad[0].id != 9 {
		t.Fatalf("accepted %d, rejected %+v; want the request rejected as too large", len(d.envs), d.bad)
	}
	if !strings.Contains(d.bad[0].err.Error(), "request context over") {
		t.Fatalf("error %v does not say the request context is over the limit", d.bad[0].err)
	}
}
