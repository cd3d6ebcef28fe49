package runtime

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec/codectest"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// allocatedBy measures what a decode allocates.
var allocatedBy = codectest.AllocatedBy

// Methods of testgrains.Probe.
const (
	probeEcho  = "Echo"
	probeItems = "Items"
)

// TestReplyDecodingRejectsHostileBytes: a client decoding the reply of a
// silo that sends hostile bytes gets ErrBadRequest naming the method, and
// allocates little for it.
func TestReplyDecodingRejectsHostileBytes(t *testing.T) {
	bodies := map[string][]byte{
		// [[{"At": nil}]]: msgpack panics (nil into time.Time).
		"items-nil-time": {0x91, 0x91, 0x81, 0xa2, 'A', 't', 0xc0},
		// [array of 65535]: 6 MiB of Items up front.
		"items-65535": {0x91, 0xdc, 0xff, 0xff},
		// [array of 2^26] of strings: 16 MiB (msgpack caps []string at 1e6).
		"echo-2^26": {0x91, 0xdd, 0x04, 0x00, 0x00, 0x00},
		// [array of 2^26] of Items: 6 GiB.
		"items-2^26": {0x91, 0xdd, 0x04, 0x00, 0x00, 0x00},
		// [array of 2^32-1] of Items: 400 GiB.
		"items-2^32-1": {0x91, 0xdd, 0xff, 0xff, 0xff, 0xff},
	}
	srv, err := transport.NewServer(transport.ServerConfig{}, transport.HandlerFunc(
		func(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
			reply.Reply(transport.NewResponse(bodies[req.Target.Key]))
		}))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		wg.Wait()
	}()
	tc, err := transport.NewClient(transport.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	rt := route{silo: cluster.SiloInfo{SiloID: "hostile", Address: lis.Addr().String()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc2 := range []struct {
		key    string
		method string
		name   string
	}{
		{"items-nil-time", probeItems, "test.Probe.Items"},
		{"items-65535", probeItems, "test.Probe.Items"},
		{"echo-2^26", probeEcho, "test.Probe.Echo"},
		{"items-2^26", probeItems, "test.Probe.Items"},
		{"items-2^32-1", probeItems, "test.Probe.Items"},
	} {
		t.Run(tc2.key, func(t *testing.T) {
			md := testgrains.ProbeType.Lookup(tc2.method)
			call := &grain.Call{Target: grain.ID{Type: testgrains.ProbeType.Name, Key: tc2.key}, Type: testgrains.ProbeType,
				Method: md, Args: md.NewArgs()}
			// Round trip once, so that the stream exists before measuring.
			_, _ = callRemote(ctx, tc, rt, call, md, false, 0)
			var reply any
			alloc := allocatedBy(1<<20, func() { reply, err = callRemote(ctx, tc, rt, call, md, false, 0) })
			if !errors.Is(err, grain.ErrBadRequest) {
				t.Fatalf("callRemote = %v, %v; want an error wrapping grain.ErrBadRequest", reply, err)
			}
			if !strings.Contains(err.Error(), tc2.name) || !strings.Contains(err.Error(), "hostile") {
				t.Errorf("error %q does not name the method %s and the silo", err, tc2.name)
			}
			// The call was answered, so it ran: only the reply is bad.
			if o := grain.OutcomeOf(err); o != grain.OutcomeUnknown {
				t.Errorf("outcome of a malformed reply: %v, want %v", o, grain.OutcomeUnknown)
			}
			if alloc > 1<<20 {
				t.Errorf("the call allocated %d bytes, want < 1 MiB", alloc)
			}
		})
	}
}

// TestReminderNoticeRejectsHostileBytes: a reminder notice from another
// silo is untrusted too.
func TestReminderNoticeRejectsHostileBytes(t *testing.T) {
	r := &reminderService{s: &Silo{log: zap.NewNop()}}
	for name, body := range map[string][]byte{
		// {"Type": str of 2^26 bytes}: msgpack allocated 1 MiB for it.
		"str-2^26": {0x81, 0xa4, 'T', 'y', 'p', 'e', 0xdb, 0x04, 0x00, 0x00, 0x00},
		// {"Name": str of 2^32-1 bytes}
		"str-2^32-1": {0x81, 0xa4, 'N', 'a', 'm', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff},
		"trailing":   {0x80, 0x00},
		"0xc1":       {0x81, 0xc1, 0xc0},
	} {
		t.Run(name, func(t *testing.T) {
			req := &transport.Envelope{Target: grain.ID{Type: reminderServiceType, Key: "0"}, Body: body}
			var resp *transport.Envelope
			alloc := allocatedBy(64<<10, func() { resp = r.handleNotice(context.Background(), req) })
			if err := resp.Err(); !errors.Is(err, grain.ErrBadRequest) || !strings.Contains(err.Error(), "reminder notice") {
				t.Fatalf("handleNotice = %v, want a reminder notice error wrapping grain.ErrBadRequest", err)
			}
			if alloc > 64<<10 {
				t.Errorf("handleNotice allocated %d bytes, want < 64 KiB", alloc)
			}
		})
	}
}

type recordingReplier struct{ resp *transport.Envelope }

func (r *recordingReplier) Reply(resp *transport.Envelope) { r.resp = resp }

// TestRecoverRequestRepliesToAPanic: the last line of the per-request path
// turns a panic into an error reply instead of ending the process.
func TestRecoverRequestRepliesToAPanic(t *testing.T) {
	s := &Silo{log: zap.NewNop()}
	req := &transport.Envelope{Target: grain.ID{Type: "test.Probe", Key: "k"}}
	var rep recordingReplier
	func() {
		defer s.recoverRequest(context.Background(), req, &rep)
		panic("boom")
	}()
	if rep.resp == nil {
		t.Fatal("no reply")
	}
	if err := rep.resp.Err(); !errors.Is(err, grain.ErrBadRequest) || !strings.Contains(err.Error(), "test.Probe") {
		t.Fatalf("reply = %v, want an error wrapping grain.ErrBadRequest naming test.Probe", err)
	}
}

func TestBadRequestLogIsRateLimitedPerPeer(t *testing.T) {
	now := time.Unix(1000, 0)
	l := badRequestLog{now: func() time.Time { return now }}
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("first from a not logged")
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("first from b not logged")
	}
	for range 5 {
		if ok, _ := l.allow("a"); ok {
			t.Fatal("logged again within the interval")
		}
	}
	now = now.Add(badRequestLogEvery)
	if ok, n := l.allow("a"); !ok || n != 5 {
		t.Fatalf("allow after the interval = %v, %d suppressed; want true, 5", ok, n)
	}
}

var fuzzTypes = []*grain.TypeDesc{testgrains.CounterType, testgrains.ProbeType, testgrains.ClockType}

// methodsOf lists the methods of desc, the reminder method too.
func methodsOf(desc *grain.TypeDesc) []*grain.MethodDesc {
	out := []*grain.MethodDesc{desc.Lookup(grain.ReminderMethod)}
	for i := range desc.Methods {
		out = append(out, &desc.Methods[i])
	}
	return out
}

// fuzzLimit bounds what decoding n bytes may allocate: the decoders
// allocate O(n) (grain/codec), per element at most a few of the largest
// Go values the test grains decode into, plus msgpack's own buffers.
func fuzzLimit(n int) uint64 { return uint64(256*n + 64<<10) }

// FuzzRequestArgs decodes a request body for every method of every test
// grain type, with the silo's own decoder.
func FuzzRequestArgs(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seed := func(v any) {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, desc := range fuzzTypes {
		for _, md := range methodsOf(desc) {
			seed(md.NewArgs())
		}
	}
	seed(&grain.Tick{Name: "r", Due: at})
	seed(struct {
		_msgpack struct{} `msgpack:",as_array"`
		A0       []testgrains.Item
	}{A0: []testgrains.Item{{Name: "a", N: 1, At: at}}})
	seed(struct {
		_msgpack struct{} `msgpack:",as_array"`
		A0       testgrains.TimerSpec
	}{A0: testgrains.TimerSpec{Due: time.Second, Period: time.Minute}})
	f.Add([]byte{0x81, 0xa3, 'D', 'u', 'e', 0xc0})
	f.Add([]byte{0x91, 0xdd, 0x04, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, desc := range fuzzTypes {
			for _, md := range methodsOf(desc) {
				var err error
				alloc := allocatedBy(fuzzLimit(len(body)), func() { _, _, err = decodeArgs(desc, md.Name, md.Fingerprint, body) })
				if err != nil && !errors.Is(err, grain.ErrBadRequest) {
					t.Fatalf("%s.%s: error %v does not wrap grain.ErrBadRequest", desc.Name, md.Name, err)
				}
				if limit := fuzzLimit(len(body)); alloc > limit {
					t.Fatalf("%s.%s: decoding %d bytes allocated %d, limit %d", desc.Name, md.Name, len(body), alloc, limit)
				}
			}
		}
	})
}

// FuzzReply decodes a reply body for every method with a reply, with the
// client's own decoder.
func FuzzReply(f *testing.F) {
	for _, desc := range fuzzTypes {
		for i := range desc.Methods {
			if md := &desc.Methods[i]; md.NewReply != nil {
				b, _ := msgpack.Marshal(md.NewReply())
				f.Add(b)
			}
		}
	}
	b, _ := msgpack.Marshal([]any{[]testgrains.Item{{Name: "a", N: 1, At: time.Unix(5, 0)}}})
	f.Add(b)
	b, _ = msgpack.Marshal([]any{testgrains.ClockCounts{Ticks: map[string]int{"a": 1}, Missed: 2, Value: 3}})
	f.Add(b)
	f.Add([]byte{0x91, 0x91, 0x81, 0xa2, 'A', 't', 0xc0})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, desc := range fuzzTypes {
			for i := range desc.Methods {
				md := &desc.Methods[i]
				if md.NewReply == nil {
					continue
				}
				var err error
				alloc := allocatedBy(fuzzLimit(len(body)), func() { _, err = decodeReply(desc.Name, md, "s", body) })
				if err != nil && !errors.Is(err, grain.ErrBadRequest) {
					t.Fatalf("%s.%s: error %v does not wrap grain.ErrBadRequest", desc.Name, md.Name, err)
				}
				if limit := fuzzLimit(len(body)); alloc > limit {
					t.Fatalf("%s.%s: decoding %d bytes allocated %d, limit %d", desc.Name, md.Name, len(body), alloc, limit)
				}
			}
		}
	})
}

// FuzzReminderNotice decodes reminder notices as the reminder service does.
func FuzzReminderNotice(f *testing.F) {
	b, _ := msgpack.Marshal(&reminderNotice{Type: "test.Clock", Key: "k", Name: "r"})
	f.Add(b)
	f.Add([]byte{0x81, 0xa4, 'T', 'y', 'p', 'e', 0xdb, 0x04, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, body []byte) {
		var err error
		alloc := allocatedBy(fuzzLimit(len(body)), func() { _, err = decodeNotice(body) })
		if err != nil && !errors.Is(err, grain.ErrBadRequest) {
			t.Fatalf("error %v does not wrap grain.ErrBadRequest", err)
		}
		if limit := fuzzLimit(len(body)); alloc > limit {
			t.Fatalf("decoding %d bytes allocated %d, limit %d", len(body), alloc, limit)
		}
	})
}
