package runtime_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/transport"
)

// rawCodec sends byte slices as they are, under the transport's codec name,
// so a test can speak the wire format (runtime/transport's doc) by hand.
type rawCodec struct{}

func (rawCodec) Name() string { return transport.CodecName }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// rawPeer opens a Connect stream to a silo that sends frames written by
// hand. Its stream window is gRPC's smallest (64 KiB), so a peer that does
// not call RecvMsg stops the silo's writer quickly, while the connection
// stays up (gRPC still reads it and answers pings).
func rawPeer(t testing.TB, addr string) grpc.ClientStream {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		"/granary.Transport/Connect", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rawRequest is a request envelope in the wire layout: [kind, id, type,
// key, method, flags, timeout_ns, hops, chain, context, body].
func rawRequest(id uint64, target grain.ID, method int, timeout time.Duration, body []byte) []any {
	return []any{1, id, target.Type, target.Key, method, 0, int64(timeout), 0, nil, nil, body}
}

// rawFrame is a frame of envelopes: [version, [envelope, ...]].
func rawFrame(t testing.TB, envs ...[]any) []byte {
	t.Helper()
	b, err := msgpack.Marshal([]any{1, envs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// counterAdd is the body of Counter.Add(n): the generated args struct is
// a msgpack array.
func counterAdd(t testing.TB, n int64) []byte {
	t.Helper()
	b, err := msgpack.Marshal([]any{n})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A peer that sends requests and never reads the replies must not freeze
// the grain it calls: its replies fill the stream's queue, and the silo ends
// that stream instead of blocking the grain's turn. Other callers keep
// being served, and a graceful Stop persists the grain.
func TestPeerThatStopsReadingDoesNotFreezeTheGrain(t *testing.T) {
	cfg := runtime.Config{
		Cluster:   fmt.Sprintf("stall-%d", time.Now().UnixNano()),
		Transport: transport.ServerConfig{MaxInflightPerStream: 32, QueueSize: 32, SendStallTimeout: 500 * time.Millisecond},
	}
	f := start(t, 1, cfg)
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "stalled")
	if _, err := c.Add(ctx, 1); err != nil {
		t.Fatal(err)
	}

	st := rawPeer(t, f.Silos[0].Address())
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		id := uint64(0)
		for range 40 {
			envs := make([][]any, 500)
			for i := range envs {
				id++
				envs[i] = rawRequest(id, c.ID(), 0, time.Minute, counterAdd(t, 1))
			}
			if err := st.SendMsg(rawFrame(t, envs...)); err != nil {
				return // the silo closed the stream
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(3 * time.Second): // the silo stopped reading
	}

	// Every call of another caller is answered promptly while the peer
	// does not read.
	var last int64
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := c.Get(cctx)
		cancel()
		if err != nil {
			t.Fatalf("Get while a peer does not read its replies: %v", err)
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
	if last < 2 {
		t.Fatalf("the peer's calls did not run: counter %d", last)
	}

	// The silo ended the peer's stream.
	<-sent
	ended := make(chan error, 1)
	go func() {
		for {
			var b []byte
			if err := st.RecvMsg(&b); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		t.Logf("the peer's stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a peer that does not read was not ended")
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := f.Silos[0].Stop(sctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	g := start(t, 1, cfg)
	if n, err := testgrains.NewCounterRef(g.Client(), "stalled").Get(ctx); err != nil || n != last {
		t.Fatalf("after a graceful Stop the grain reads %d, %v; want %d (state not persisted)", n, err, last)
	}
}
