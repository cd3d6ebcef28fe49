package runtime_test

import (
	"context"
	"fmt"
	"math"
	goruntime "runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// rawCodec sends byte slices as they are, under the transport's codec name,
// so a test can speak the wire format (runtime/internal/transport's doc) by hand.
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
	cc := rawConn(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		"/granary.Transport/Connect", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rawConn is a connection for rawPeer streams.
func rawConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// rawRequest is a request envelope in the wire layout: [kind, id, type,
// key, method, flags, timeout_ns, hops, chain, context, body].
//
// The method is named as the test grains have it, with their fingerprint.
func rawRequest(id uint64, target grain.ID, method string, timeout time.Duration, body []byte) []any {
	var fp uint64
	for _, t := range []*grain.TypeDesc{testgrains.CounterType, testgrains.ProbeType, testgrains.ClockType} {
		if md := t.Lookup(method); t.Name == target.Type && md != nil {
			fp = md.Fingerprint
		}
	}
	return []any{1, id, target.Type, target.Key, method, fp, 0, int64(timeout), 0, nil, nil, body}
}

// rawHops is the index of the hop count in a rawRequest.
const rawHops = 8

// rawFrame is a frame of envelopes: [version, [envelope, ...]].
func rawFrame(t testing.TB, envs ...[]any) []byte {
	t.Helper()
	b, err := msgpack.Marshal([]any{2, envs})
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
		Transport: runtime.TransportConfig{MaxInflightPerStream: 32, QueueSize: 32, SendStallTimeout: 500 * time.Millisecond},
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
				envs[i] = rawRequest(id, c.ID(), "Add", time.Minute, counterAdd(t, 1))
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

// blockingDirectory is a directory whose lookups and registrations block
// until their ctx ends, as with etcd unreachable. It records the longest
// deadline a lookup was given (registrations have the activation's own,
// Config.DeactivationTimeout).
type blockingDirectory struct {
	*directory.Memory
	longest atomic.Int64 // time.Duration
}

func (d *blockingDirectory) wait(ctx context.Context, record bool) error {
	if !record {
		<-ctx.Done()
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok {
		left := int64(time.Until(dl))
		for {
			old := d.longest.Load()
			if left <= old || d.longest.CompareAndSwap(old, left) {
				break
			}
		}
	} else {
		d.longest.Store(math.MaxInt64)
	}
	<-ctx.Done()
	return ctx.Err()
}

func (d *blockingDirectory) Lookup(ctx context.Context, id grain.ID) (directory.Entry, bool, error) {
	return directory.Entry{}, false, d.wait(ctx, true)
}

func (d *blockingDirectory) Register(ctx context.Context, id grain.ID, e directory.Entry) (directory.Entry, error) {
	return directory.Entry{}, d.wait(ctx, false)
}

// rawResponses decodes the response envelopes of a frame: [kind, id,
// status, body, err_code, ...].
func rawResponses(t testing.TB, frame []byte) [][]any {
	t.Helper()
	var f []any
	if err := msgpack.Unmarshal(frame, &f); err != nil || len(f) != 2 {
		t.Fatalf("response frame: %v", err)
	}
	var out [][]any
	for _, e := range f[1].([]any) {
		out = append(out, e.([]any))
	}
	return out
}

// A flood of requests for grains that are not active on the silo, while
// the directory does not answer, takes a bounded number of goroutines: the
// requests beyond Config.MaxRouting are answered with ErrOverloaded at
// once, and the others wait at most the silo's ResponseTimeout, however
// long their sender said it would wait.
func TestRoutingIsBounded(t *testing.T) {
	const maxRouting, frames, perFrame = 100, 20, 1000
	dir := &blockingDirectory{Memory: directory.NewMemory()}
	f := start(t, 1, runtime.WithDirectory(runtime.Config{MaxRouting: maxRouting,
		ResponseTimeout: 2 * time.Second, DeactivationTimeout: 2 * time.Second}, dir))
	before := goruntime.NumGoroutine()

	st := rawPeer(t, f.Silos[0].Address())
	var overloaded, answered atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for answered.Load() < frames*perFrame {
			var b []byte
			if err := st.RecvMsg(&b); err != nil {
				return
			}
			for _, e := range rawResponses(t, b) {
				answered.Add(1)
				if code, _ := e[4].(string); code == grain.CodeOf(grain.ErrOverloaded) {
					overloaded.Add(1)
				}
			}
		}
	}()
	var peak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), int64(goruntime.NumGoroutine())))
			select {
			case <-sampling:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	id := uint64(0)
	probe := testgrains.ProbeType.Name
	for range frames {
		envs := make([][]any, perFrame)
		for i := range envs {
			id++
			envs[i] = rawRequest(id, grain.ID{Type: probe, Key: fmt.Sprint("flood-", id)}, "Ping", time.Hour, []byte{0x90})
			if id%2 == 1 {
				envs[i][rawHops] = 1 // forwarded: this silo was chosen to host the grain, so it activates it
			}
		}
		if err := st.SendMsg(rawFrame(t, envs...)); err != nil {
			t.Fatal(err)
		}
	}
	for wait := time.Now().Add(5 * time.Second); overloaded.Load() < frames*perFrame-10*maxRouting && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	close(sampling)
	<-sampled
	if grown := peak.Load() - int64(before); grown > maxRouting+200 {
		t.Fatalf("goroutines grew by %d (from %d) under a flood of %d requests for inactive grains; want at most MaxRouting (%d) + 200",
			grown, before, frames*perFrame, maxRouting)
	}
	if n := overloaded.Load(); n < frames*perFrame-10*maxRouting { // admitted ones end after 2s, and more are admitted
		t.Fatalf("only %d of %d requests were answered overloaded at once (%d answered)", n, frames*perFrame, answered.Load())
	}
	if d := time.Duration(dir.longest.Load()); d > 2*time.Second {
		t.Fatalf("the directory was given %v for a request whose sender asked for 1h; want at most the ResponseTimeout (2s)", d)
	}
	t.Logf("goroutines %d -> peak %d; %d overloaded; longest directory deadline %v",
		before, peak.Load(), overloaded.Load(), time.Duration(dir.longest.Load()))
	// The admitted requests end at the ResponseTimeout.
	select {
	case <-readDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d requests answered", answered.Load(), frames*perFrame)
	}
}
