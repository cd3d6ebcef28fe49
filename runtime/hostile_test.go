package runtime_test

// Hostile request bodies (issue 9, findings 1 and 2): a silo answers them
// with grain.ErrBadRequest naming the grain type and method, allocates
// little for them, and keeps serving.

import (
	"context"
	"errors"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/reminder"
)

// Methods of testgrains.Probe.
const (
	probeSumInts  = "SumInts"
	probeSumItems = "SumItems"
)

// hostileRequests are request bodies the issue found, for test.Probe.
var hostileRequests = []struct {
	name   string
	method string
	body   []byte
	want   string // in the error message
}{
	// {"Due": nil} into grain.Tick: msgpack panics (nil into time.Time).
	{"reminder tick with nil time", grain.ReminderMethod, []byte{0x81, 0xa3, 'D', 'u', 'e', 0xc0}, "test.Probe.ReceiveReminder"},
	// [array of 2^26]: msgpack allocated 2^26 elements up front.
	{"[]int64 of 2^26", probeSumInts, []byte{0x91, 0xdd, 0x04, 0x00, 0x00, 0x00}, "test.Probe.SumInts"},
	{"[]Item of 2^26", probeSumItems, []byte{0x91, 0xdd, 0x04, 0x00, 0x00, 0x00}, "test.Probe.SumItems"},
	// [array of 2^32-1]: 32 GiB for []int64.
	{"[]int64 of 2^32-1", probeSumInts, []byte{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, "test.Probe.SumInts"},
	{"[]Item of 2^32-1", probeSumItems, []byte{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, "test.Probe.SumItems"},
}

func newRawClient(t *testing.T) *transport.Client {
	t.Helper()
	tc, err := transport.NewClient(transport.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

// rawCall sends a request for method of target's type as testgrains.Probe
// has it (its fingerprint, if it has the method).
func rawCall(ctx context.Context, tc *transport.Client, addr string, target grain.ID, method string, body []byte) error {
	var fp uint64
	if md := testgrains.ProbeType.Lookup(method); md != nil {
		fp = md.Fingerprint
	}
	_, err := tc.Call(ctx, addr, &transport.Envelope{Target: target, Method: method, Fingerprint: fp, Body: body, Timeout: 10 * time.Second})
	return err
}

func totalAlloc() uint64 {
	var m goruntime.MemStats
	goruntime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestHostileRequestBodiesAreBadRequests(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	tc := newRawClient(t)
	addr := f.Silos[0].Address()
	p := testgrains.NewProbeRef(f.Client(), "hostile")
	if err := p.Ping(ctx); err != nil { // activates the grain, so no routing runs below
		t.Fatal(err)
	}
	for _, hr := range hostileRequests {
		t.Run(hr.name, func(t *testing.T) {
			before := totalAlloc()
			err := rawCall(ctx, tc, addr, p.ID(), hr.method, hr.body)
			alloc := totalAlloc() - before
			if !errors.Is(err, grain.ErrBadRequest) {
				t.Fatalf("call = %v, want an error wrapping grain.ErrBadRequest", err)
			}
			if !strings.Contains(err.Error(), hr.want) {
				t.Errorf("error %q does not name %s", err, hr.want)
			}
			t.Log(err)
			// The whole process: silo, client, gRPC and etcd keepalives.
			if alloc > 8<<20 {
				t.Errorf("the call allocated %d bytes, want < 8 MiB", alloc)
			}
			if err := p.Ping(ctx); err != nil {
				t.Fatalf("silo stopped serving: %v", err)
			}
		})
	}
	// Valid slice arguments still work, on the wire too.
	if n, err := p.SumInts(ctx, []int64{1, 2, 3}); err != nil || n != 6 {
		t.Fatalf("SumInts = %d, %v; want 6", n, err)
	}
	if n, err := p.SumItems(ctx, []testgrains.Item{{N: 4, At: time.Now()}, {N: 5}}); err != nil || n != 9 {
		t.Fatalf("SumItems = %d, %v; want 9", n, err)
	}
}

// TestHostileRequestDoesNotKillSiloProcess sends the bytes to a silo
// process from a raw transport client: the process answers ErrBadRequest,
// stays alive and serves other callers (before the fix it exited).
func TestHostileRequestDoesNotKillSiloProcess(t *testing.T) {
	pc := startProcesses(t, 1, 0)
	ctx := ctxT(t)
	tc := newRawClient(t)
	sp := pc.silos[0]
	target := grain.ID{Type: testgrains.ProbeType.Name, Key: "hostile-proc"}
	for _, hr := range hostileRequests {
		err := rawCall(ctx, tc, sp.Addr, target, hr.method, hr.body)
		if !errors.Is(err, grain.ErrBadRequest) {
			t.Fatalf("%s: call = %v, want an error wrapping grain.ErrBadRequest", hr.name, err)
		}
		if !strings.Contains(err.Error(), hr.want) {
			t.Errorf("%s: error %q does not name %s", hr.name, err, hr.want)
		}
	}
	select {
	case <-sp.Exited():
		t.Fatal("silo process exited")
	case <-time.After(100 * time.Millisecond):
	}
	p := testgrains.NewProbeRef(pc.client, "after")
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("silo process stopped serving: %v", err)
	}
	if n, err := p.SumInts(ctx, []int64{1, 2}); err != nil || n != 3 {
		t.Fatalf("SumInts = %d, %v; want 3", n, err)
	}
}

// slowGet is a reminder table whose Get waits until released: etcd slow
// or cut off while another silo's notice asks this one to re-read a
// reminder.
type slowGet struct {
	reminder.Table
	entered chan struct{}
	release chan struct{}
}

func (s *slowGet) Get(ctx context.Context, id grain.ID, name string) (reminder.Entry, bool, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return s.Table.Get(ctx, id, name)
}

// TestReminderNoticeDoesNotBlockItsStream: a reminder notice makes the
// silo read the reminder table; while etcd is slow, the calls that follow
// it on the same stream must still be served (it used to be handled on the
// stream's reader goroutine).
func TestReminderNoticeDoesNotBlockItsStream(t *testing.T) {
	table := &slowGet{Table: reminder.NewMemory(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := start(t, 1, runtime.Config{Reminders: table})
	ctx := ctxT(t)
	tc := newRawClient(t)
	addr := f.Silos[0].Address()
	p := testgrains.NewProbeRef(f.Client(), "after-notice")
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	notice, err := msgpack.Marshal(map[string]string{"Type": testgrains.ProbeType.Name, "Key": "k", "Name": "r"})
	if err != nil {
		t.Fatal(err)
	}
	noticeDone := make(chan error, 1)
	go func() {
		noticeDone <- rawCall(ctx, tc, addr, grain.ID{Type: "granary.reminders", Key: "notice"}, "$notice", notice)
	}()
	select {
	case <-table.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the notice never read the table")
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	const probePing = "Ping"
	if err := rawCall(short, tc, addr, p.ID(), probePing, []byte{0x80}); err != nil {
		t.Fatalf("a call behind a reminder notice on the same stream: %v", err)
	}
	close(table.release)
	if err := <-noticeDone; err != nil {
		t.Fatalf("notice: %v", err)
	}
}
