package transport

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
)

// Requests beyond the cap of a stream, or of a connection, are answered at
// once with grain.ErrOverloaded instead of being queued.
func TestRequestsInFlightAreCapped(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		max  int
	}{
		{"per-stream", ServerConfig{MaxInflightPerStream: 4}, 4},
		{"per-connection", ServerConfig{MaxInflightPerStream: 4, MaxInflightPerConnection: 2}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler()
			srv, addr := startServer(t, tc.cfg, h)
			c := newTestClient(t, ClientConfig{})
			ctx := testCtx(t)
			var wg sync.WaitGroup
			errs := startCalls(ctx, c, addr, tc.max, &wg)
			held := waitHeld(t, h, tc.max)

			start := time.Now()
			_, err := c.Call(ctx, addr, request(mEcho, "one too many"))
			if !errors.Is(err, grain.ErrOverloaded) {
				t.Fatalf("call beyond %d in flight: %v, want ErrOverloaded", tc.max, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the overloaded answer took %v", d)
			}
			if n := srv.Stats().RequestsOverloaded; n != 1 {
				t.Fatalf("RequestsOverloaded = %d, want 1", n)
			}
			for _, hc := range held {
				hc.reply.Reply(NewResponse(hc.req.Body))
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("held call: %v", err)
				}
			}
			// Answered requests no longer count.
			for i := range 2 * tc.max {
				if resp, err := c.Call(ctx, addr, request(mEcho, strconv.Itoa(i))); err != nil || string(resp.Body) != strconv.Itoa(i) {
					t.Fatalf("call after the held ones were answered: %v, %v", resp, err)
				}
			}
		})
	}
}

// The timeout a sender asks for is capped by MaxRequestTimeout, and a
// request without one gets it.
func TestRequestTimeoutIsCapped(t *testing.T) {
	_, addr := startServer(t, ServerConfig{MaxRequestTimeout: time.Second}, newTestHandler())
	c := newTestClient(t, ClientConfig{})
	for _, ask := range []time.Duration{time.Hour, 0} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
		if ask == 0 {
			ctx = context.Background()
		}
		req := request(mDeadline, "")
		req.Timeout = ask
		resp, err := c.Call(ctx, addr, req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		left, err := strconv.ParseInt(string(resp.Body), 10, 64)
		if err != nil {
			t.Fatalf("asked for %v: handler's deadline %q", ask, resp.Body)
		}
		if time.Duration(left) > time.Second {
			t.Fatalf("asked for %v: the handler's ctx has %v left, want at most 1s", ask, time.Duration(left))
		}
	}
}

// A one-way Send never waits for the network: when the stream's queue is
// full (the server does not read), it fails at once with ErrOverloaded.
func TestSendDoesNotWaitForAFullQueue(t *testing.T) {
	release := make(chan struct{})
	_, addr := startServer(t, ServerConfig{}, HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		select { // the stream's reader stops: flow control stops the client's writer
		case <-release:
		case <-ctx.Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, ClientConfig{QueueSize: 4})
	body := make([]byte, 1<<20)
	for i := range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		began := time.Now()
		req := request(mEcho, "")
		req.Body = body
		err := c.Send(ctx, addr, req)
		cancel()
		if waited := time.Since(began); waited > time.Second {
			t.Fatalf("Send #%d waited %v for room (err %v)", i, waited, err)
		}
		if errors.Is(err, grain.ErrOverloaded) {
			t.Logf("Send #%d: %v", i, err)
			return
		}
		if err != nil {
			t.Fatalf("Send #%d: %v", i, err)
		}
	}
	t.Fatal("200 one-way requests of 1 MiB queued while the server did not read")
}

// A connection that sends malformed requests past MalformedPerSecond is
// slowed down, and a well-behaved connection to the same server is not.
func TestMalformedRequestsPastTheBudgetAreSlowedDown(t *testing.T) {
	_, addr := startServer(t, ServerConfig{MalformedPerSecond: 1000}, newTestHandler())
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	st := rawStream(t, addr)
	envs := make([][]byte, 100)
	const frames = 10 // 1000 malformed requests: 750 past the burst of 250
	answered := make(chan time.Duration, 1)
	began := time.Now()
	go func() {
		n := 0
		d := newFrameDecoder(testLimits())
		for n < frames*len(envs) {
			var b []byte
			if err := st.RecvMsg(&b); err != nil {
				t.Errorf("RecvMsg: %v", err)
				break
			}
			if err := d.decode(b); err != nil {
				t.Errorf("decode: %v", err)
				break
			}
			n += len(d.envs)
		}
		answered <- time.Since(began)
	}()
	for i := range frames {
		for j := range envs {
			// No target type: answered with ErrBadRequest.
			envs[j] = appendEnvelope(nil, &Envelope{Kind: KindRequest, ID: uint64(i*len(envs) + j + 1)})
		}
		if err := st.SendMsg(frameOf(envs...)); err != nil {
			t.Fatal(err)
		}
		// Meanwhile another connection is served at once.
		t0 := time.Now()
		if _, err := c.Call(ctx, addr, request(mEcho, "")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > 200*time.Millisecond {
			t.Fatalf("a call on another connection took %v", d)
		}
	}
	if d := <-answered; d < 500*time.Millisecond {
		t.Fatalf("1000 malformed requests answered in %v; want them slowed down to about 1000/s past a burst of 250", d)
	} else {
		t.Logf("1000 malformed requests answered in %v", d)
	}
}

// TestGrainErrorsAreNotChargedAsMalformed: an error a grain's turn
// returned (ran and failed) is not the peer's fault, whatever its code: it
// must not slow the connection down like a malformed request.
func TestGrainErrorsAreNotChargedAsMalformed(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
		reply.Reply(NewErrorResponse(grain.WithOutcome(grain.ErrBadRequest, grain.OutcomeFailed)))
	})
	_, addr := startServer(t, ServerConfig{MalformedPerSecond: 8}, h)
	c := newTestClient(t, ClientConfig{})
	ctx := testCtx(t)
	start := time.Now()
	for range 40 {
		if _, err := c.Call(ctx, addr, request(mEcho, "")); grain.OutcomeOf(err) != grain.OutcomeFailed {
			t.Fatalf("call: %v (%v), want a ran-and-failed error", err, grain.OutcomeOf(err))
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("40 calls answered with a grain's error took %v: charged as malformed", d)
	}
}
