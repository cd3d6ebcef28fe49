package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/runtime/storage"
)

// opTimeout bounds every single provider call of the suite, so a provider
// that hangs fails the subtest instead of the whole test binary.
const opTimeout = 10 * time.Second

// Run runs the conformance suite against the providers newProvider returns.
// It calls newProvider once per subtest, with that subtest's t; each
// provider must start empty (or in a namespace no other call shares) and is
// used by that subtest only. Subtests run one after another.
//
// The suite checks the contract documented in package storage: read of a
// missing record, round trips that copy data, etag compare-and-set for
// Write and Clear, etags that are never reused (also across Clear), key
// isolation, empty values, concurrent writers, size limits (for providers
// that implement storage.Limiter) and context cancellation.
func Run(t *testing.T, newProvider func(t *testing.T) storage.Provider) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, p storage.Provider)
	}{
		{"read-missing", testReadMissing},
		{"write-then-read", testWriteThenRead},
		{"write-empty-etag-over-existing", testWriteEmptyEtagOverExisting},
		{"stale-etag", testStaleEtag},
		{"bogus-etag", testBogusEtag},
		{"etag-changes-on-every-write", testEtagChanges},
		{"clear", testClear},
		{"keys-isolated", testKeysIsolated},
		{"empty-value", testEmptyValue},
		{"concurrent-writers", testConcurrentWriters},
		{"large-values", testLargeValues},
		{"cancelled-context", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProvider(t)
			if p == nil {
				t.Fatal("newProvider returned nil")
			}
			tc.fn(t, p)
		})
	}
}

// key returns a key unique to the running subtest, so providers that share
// a namespace across subtests still see fresh records.
func key(t *testing.T, state string) storage.Key {
	return storage.Key{GrainType: "storagetest.Grain", GrainKey: t.Name(), State: state}
}

// checker wraps a provider with helpers that fail the test on unexpected errors.
type checker struct {
	t *testing.T
	p storage.Provider
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (h checker) read(k storage.Key) ([]byte, string) {
	h.t.Helper()
	data, etag, err := h.p.Read(ctxT(h.t), k)
	if err != nil {
		h.t.Fatalf("Read(%s): unexpected error: %v", k, err)
	}
	return data, etag
}

func (h checker) write(k storage.Key, data []byte, etag string) string {
	h.t.Helper()
	ne, err := h.p.Write(ctxT(h.t), k, data, etag)
	if err != nil {
		h.t.Fatalf("Write(%s, %d bytes, etag %q): unexpected error: %v", k, len(data), etag, err)
	}
	if ne == "" {
		h.t.Fatalf("Write(%s, etag %q) returned an empty etag", k, etag)
	}
	return ne
}

func (h checker) clear(k storage.Key, etag string) {
	h.t.Helper()
	if err := h.p.Clear(ctxT(h.t), k, etag); err != nil {
		h.t.Fatalf("Clear(%s, etag %q): unexpected error: %v", k, etag, err)
	}
}

// writeConflict checks that a write fails with ErrConflict.
func (h checker) writeConflict(k storage.Key, data []byte, etag string) {
	h.t.Helper()
	ne, err := h.p.Write(ctxT(h.t), k, data, etag)
	if !errors.Is(err, storage.ErrConflict) {
		h.t.Fatalf("Write(%s, etag %q) = (%q, %v), want an error wrapping storage.ErrConflict", k, etag, ne, err)
	}
}

func (h checker) clearConflict(k storage.Key, etag string) {
	h.t.Helper()
	err := h.p.Clear(ctxT(h.t), k, etag)
	if !errors.Is(err, storage.ErrConflict) {
		h.t.Fatalf("Clear(%s, etag %q) = %v, want an error wrapping storage.ErrConflict", k, etag, err)
	}
}

// expect checks the stored record.
func (h checker) expect(k storage.Key, wantData []byte, wantEtag string) {
	h.t.Helper()
	data, etag := h.read(k)
	if etag != wantEtag || !bytes.Equal(data, wantData) {
		h.t.Fatalf("Read(%s) = (%s, etag %q), want (%s, etag %q)", k, show(data), etag, show(wantData), wantEtag)
	}
}

func (h checker) expectMissing(k storage.Key) {
	h.t.Helper()
	data, etag := h.read(k)
	if data != nil || etag != "" {
		h.t.Fatalf("Read(%s) = (%s, etag %q), want (nil, \"\") for a missing record", k, show(data), etag)
	}
}

func show(b []byte) string {
	if b == nil {
		return "nil"
	}
	if len(b) > 32 {
		return fmt.Sprintf("%d bytes %q...", len(b), b[:32])
	}
	return strconv.Quote(string(b))
}

func testReadMissing(t *testing.T, p storage.Provider) {
	checker{t, p}.expectMissing(key(t, "s"))
}

func testWriteThenRead(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	k := key(t, "s")
	in := []byte("hello, grain")
	e1 := h.write(k, in, "")
	in[0] = 'J' // the caller reuses its buffer: the stored value must not change
	h.expect(k, []byte("hello, grain"), e1)

	out, _ := h.read(k)
	out[0] = 'Y' // the caller scribbles on what it read
	h.expect(k, []byte("hello, grain"), e1)

	e2 := h.write(k, []byte("second"), e1)
	if e2 == e1 {
		t.Fatalf("second Write returned the same etag %q", e1)
	}
	h.expect(k, []byte("second"), e2)
}

func testWriteEmptyEtagOverExisting(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	k := key(t, "s")
	e1 := h.write(k, []byte("v1"), "")
	h.writeConflict(k, []byte("v2"), "")
	h.expect(k, []byte("v1"), e1)
}

func testStaleEtag(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	k := key(t, "s")
	e1 := h.write(k, []byte("v1"), "")
	e2 := h.write(k, []byte("v2"), e1)
	h.writeConflict(k, []byte("v3"), e1)
	h.expect(k, []byte("v2"), e2)
}

// testBogusEtag: etags the provider never issued fail with ErrConflict,
// whether or not the record exists, and change nothing.
func testBogusEtag(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	bogus := []string{"not-an-etag", "0", "-1", " ", "999999999999999999999999"}
	missing := key(t, "missing")
	for _, b := range bogus {
		h.writeConflict(missing, []byte("x"), b)
		h.clearConflict(missing, b)
	}
	h.expectMissing(missing)

	k := key(t, "s")
	e1 := h.write(k, []byte("v1"), "")
	for _, b := range bogus {
		if b == e1 {
			continue
		}
		h.writeConflict(k, []byte("x"), b)
		h.clearConflict(k, b)
	}
	// Near misses of the real etag: the same text with something around it.
	for _, b := range []string{e1 + "0", "0" + e1, " " + e1, e1 + " "} {
		h.writeConflict(k, []byte("x"), b)
		h.clearConflict(k, b)
	}
	h.expect(k, []byte("v1"), e1)
}

func testEtagChanges(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	k := key(t, "s")
	seen := map[string]int{}
	etag := ""
	for i := range 5 {
		etag = h.write(k, []byte("same value"), etag) // same data every time
		if j, dup := seen[etag]; dup {
			t.Fatalf("write #%d returned etag %q, already returned by write #%d", i, etag, j)
		}
		seen[etag] = i
	}
	h.expect(k, []byte("same value"), etag)
}

func testClear(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	k := key(t, "s")
	e1 := h.write(k, []byte("v1"), "")
	e2 := h.write(k, []byte("v2"), e1)

	h.clearConflict(k, e1) // stale
	h.clearConflict(k, "") // record exists
	h.expect(k, []byte("v2"), e2)

	h.clear(k, e2)
	h.expectMissing(k)
	h.clear(k, "") // clearing a missing record with "" is fine, and idempotent
	h.clear(k, "")
	h.clearConflict(k, e2)              // the record is gone: its etag is stale
	h.writeConflict(k, []byte("x"), e2) // so is writing with it
	h.expectMissing(k)

	e3 := h.write(k, []byte("v3"), "")
	if e3 == e1 || e3 == e2 {
		t.Fatalf("write after Clear returned etag %q, which the record had before (%q, %q): etags must never be reused", e3, e1, e2)
	}
	// ABA: holders of the old etags must not be able to write over the new
	// record.
	h.writeConflict(k, []byte("zombie"), e1)
	h.writeConflict(k, []byte("zombie"), e2)
	h.clearConflict(k, e1)
	h.expect(k, []byte("v3"), e3)
}

func testKeysIsolated(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	base := t.Name()
	keys := []storage.Key{
		{GrainType: "T", GrainKey: base, State: "s"},
		{GrainType: "T", GrainKey: base, State: "s2"},
		{GrainType: "T", GrainKey: base + "2", State: "s"},
		{GrainType: "T2", GrainKey: base, State: "s"},
		{GrainType: "T", GrainKey: base, State: ""},
		// Components containing the separators of common encodings.
		{GrainType: "a/b", GrainKey: "c" + base, State: ""},
		{GrainType: "a", GrainKey: "b/c" + base, State: ""},
		{GrainType: "a", GrainKey: "b", State: "c" + base},
		{GrainType: "a%2Fb", GrainKey: "c" + base, State: ""},
		{GrainType: "a", GrainKey: "b#c" + base, State: ""},
		{GrainType: "a", GrainKey: "b", State: "#c" + base},
		{GrainType: "a", GrainKey: "b\x00c" + base, State: ""},
		{GrainType: "ünï", GrainKey: "κλειδί " + base, State: "état"},
	}
	etags := make([]string, len(keys))
	for i, k := range keys {
		h.expectMissing(k)
		etags[i] = h.write(k, fmt.Appendf(nil, "value %d", i), "")
	}
	for i, k := range keys {
		h.expect(k, fmt.Appendf(nil, "value %d", i), etags[i])
	}
	// Clearing one leaves the others alone.
	h.clear(keys[5], etags[5])
	h.expectMissing(keys[5])
	for i, k := range keys {
		if i != 5 {
			h.expect(k, fmt.Appendf(nil, "value %d", i), etags[i])
		}
	}
}

func testEmptyValue(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	for _, v := range [][]byte{{}, nil} {
		k := key(t, fmt.Sprintf("nil=%v", v == nil))
		etag := h.write(k, v, "")
		data, got := h.read(k)
		if got != etag || len(data) != 0 {
			t.Fatalf("Read(%s) of an empty value = (%s, etag %q), want (empty, etag %q): an empty value is a record", k, show(data), got, etag)
		}
		h.writeConflict(k, v, "") // it exists
		e2 := h.write(k, v, etag)
		if e2 == etag {
			t.Fatalf("rewriting an empty value returned the same etag %q", etag)
		}
		h.clear(k, e2)
		h.expectMissing(k)
	}
}

func testConcurrentWriters(t *testing.T, p storage.Provider) {
	const workers = 8

	// Rounds: all workers try to increment from the same etag at once;
	// exactly one may win.
	t.Run("rounds", func(t *testing.T) {
		h := checker{t, p}
		const rounds = 10
		k := key(t, "rounds")
		h.write(k, []byte("0"), "")
		for r := range rounds {
			data, etag := h.read(k)
			n, err := strconv.Atoi(string(data))
			if err != nil {
				t.Fatalf("round %d: stored counter %s: %v", r, show(data), err)
			}
			var (
				wins, conflicts atomic.Int32
				winner          atomic.Value
				wg              sync.WaitGroup
				start           = make(chan struct{})
			)
			for range workers {
				wg.Go(func() {
					<-start
					ne, err := p.Write(ctxT(t), k, []byte(strconv.Itoa(n+1)), etag)
					switch {
					case err == nil:
						wins.Add(1)
						winner.Store(ne)
					case errors.Is(err, storage.ErrConflict):
						conflicts.Add(1)
					default:
						t.Errorf("round %d: Write: unexpected error: %v", r, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			if wins.Load() != 1 || conflicts.Load() != workers-1 {
				t.Fatalf("round %d: %d writers raced from etag %q: %d won, %d got ErrConflict; want exactly 1 winner",
					r, workers, etag, wins.Load(), conflicts.Load())
			}
			h.expect(k, []byte(strconv.Itoa(n+1)), winner.Load().(string))
		}
		h.expect(k, []byte(strconv.Itoa(rounds)), mustEtag(h, k))
	})

	// Free-running read-modify-write loops: no increment may be lost.
	t.Run("increments", func(t *testing.T) {
		h := checker{t, p}
		const perWorker = 10
		k := key(t, "increments")
		var (
			successes atomic.Int32
			wg        sync.WaitGroup
		)
		for w := range workers {
			wg.Go(func() {
				for done, attempts := 0, 0; done < perWorker; attempts++ {
					if attempts > 100*workers*perWorker {
						t.Errorf("worker %d: no progress after %d attempts", w, attempts)
						return
					}
					data, etag, err := p.Read(ctxT(t), k)
					if err != nil {
						t.Errorf("worker %d: Read: %v", w, err)
						return
					}
					n := 0
					if etag != "" {
						if n, err = strconv.Atoi(string(data)); err != nil {
							t.Errorf("worker %d: stored counter %s: %v", w, show(data), err)
							return
						}
					}
					_, err = p.Write(ctxT(t), k, []byte(strconv.Itoa(n+1)), etag)
					switch {
					case err == nil:
						successes.Add(1)
						done++
					case errors.Is(err, storage.ErrConflict):
						// Lost the race: read again.
					default:
						t.Errorf("worker %d: Write: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		data, _ := h.read(k)
		if got, want := string(data), strconv.Itoa(int(successes.Load())); got != want {
			t.Fatalf("counter = %s after %d successful compare-and-set increments; want %s (an increment was lost)",
				show(data), successes.Load(), want)
		}
		if successes.Load() != workers*perWorker {
			t.Fatalf("%d successful writes, want %d", successes.Load(), workers*perWorker)
		}
	})
}

func mustEtag(h checker, k storage.Key) string {
	h.t.Helper()
	_, etag := h.read(k)
	if etag == "" {
		h.t.Fatalf("Read(%s): record is missing", k)
	}
	return etag
}

func testLargeValues(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	limit := 0
	if l, ok := p.(storage.Limiter); ok {
		limit = l.MaxValueBytes()
	}

	// A moderately large value round trips byte for byte.
	size := 64 << 10
	if limit > 0 {
		size = min(size, limit)
	}
	k := key(t, "64k")
	v := randomBytes(size)
	etag := h.write(k, v, "")
	h.expect(k, v, etag)

	if limit <= 0 {
		t.Logf("provider has no value size limit (does not implement storage.Limiter, or MaxValueBytes() <= 0)")
		return
	}

	// Exactly the limit is accepted.
	k = key(t, "limit")
	v = randomBytes(limit)
	etag = h.write(k, v, "")
	h.expect(k, v, etag)

	// One byte more is refused, over an existing record and for a new one,
	// and nothing is written.
	tooBig := randomBytes(limit + 1)
	checkTooLarge := func(k storage.Key, etag string) {
		t.Helper()
		ne, err := p.Write(ctxT(t), k, tooBig, etag)
		if !errors.Is(err, storage.ErrTooLarge) {
			t.Fatalf("Write(%s, %d bytes) with MaxValueBytes() = %d: got (%q, %v), want an error wrapping storage.ErrTooLarge",
				k, len(tooBig), limit, ne, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, strconv.Itoa(limit+1)) || !strings.Contains(msg, strconv.Itoa(limit)) {
			t.Errorf("ErrTooLarge message %q should state the size (%d) and the limit (%d)", msg, limit+1, limit)
		}
	}
	checkTooLarge(k, etag)
	h.expect(k, v, etag)
	fresh := key(t, "too-large")
	checkTooLarge(fresh, "")
	h.expectMissing(fresh)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 42))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testCancelledContext(t *testing.T, p storage.Provider) {
	h := checker{t, p}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	} {
		k := key(t, c.name)
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, c.want) {
				t.Fatalf("%s with a %s context: got %v, want an error wrapping %v", op, c.name, err, c.want)
			}
		}
		_, _, err := p.Read(c.ctx, k)
		check("Read", err)
		_, err = p.Write(c.ctx, k, []byte("x"), "")
		check("Write", err)
		h.expectMissing(k)

		etag := h.write(k, []byte("v1"), "")
		_, err = p.Write(c.ctx, k, []byte("v2"), etag)
		check("Write", err)
		err = p.Clear(c.ctx, k, etag)
		check("Clear", err)
		h.expect(k, []byte("v1"), etag)
	}
}
