package remindertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
)

// opTimeout bounds every single table call of the suite, so a table that
// hangs fails the subtest instead of the whole test binary.
const opTimeout = 10 * time.Second

// grainType is the grain type of the suite's reminders where the type does
// not matter.
const grainType = "remindertest.Grain"

// base is a due time with a millisecond part; every time the suite stores
// is a whole number of milliseconds, the precision a table must keep.
var base = time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

// Run runs the conformance suite against the tables newTable returns. It
// calls newTable once per subtest, with that subtest's t; each table must
// start empty (no reminders, no progress saved) and is used by that subtest
// only. Subtests run one after another.
//
// The suite checks the contract documented on reminder.Table: round trips
// that keep Start and Period (to the millisecond at least) and the etag,
// Upsert replacing, etags that change on every Upsert and are never reused
// (also across Remove), compare-and-set of Upsert and Remove, ListGrain
// order and isolation between grains, ListBucket returning each reminder of
// its bucket exactly once (also many in one bucket), rejection of invalid
// entries and buckets, progress that is zero until saved and never moves
// backwards (also when saved concurrently), concurrent upserts and context
// cancellation.
func Run(t *testing.T, newTable func(t *testing.T) reminder.Table) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, tb reminder.Table)
	}{
		{"round-trip", testRoundTrip},
		{"upsert-replaces", testUpsertReplaces},
		{"etag-changes-on-every-upsert", testEtagChanges},
		{"stale-etag", testStaleEtag},
		{"remove", testRemove},
		{"remove-missing", testRemoveMissing},
		{"list-grain", testListGrain},
		{"list-bucket", testListBucket},
		{"invalid", testInvalid},
		{"progress", testProgress},
		{"progress-concurrent", testProgressConcurrent},
		{"concurrent-upserts", testConcurrentUpserts},
		{"cancelled-context", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t)
			if tb == nil {
				t.Fatal("newTable returned nil")
			}
			tc.fn(t, tb)
		})
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func gid(key string) grain.ID { return grain.ID{Type: grainType, Key: key} }

func entry(id grain.ID, name string, start time.Time, period time.Duration) reminder.Entry {
	return reminder.Entry{Grain: id, Name: name, Start: start, Period: period}
}

// show formats an entry for failure messages.
func show(e reminder.Entry) string {
	return fmt.Sprintf("{%q #%q start %s period %v etag %q}",
		e.Grain.String(), e.Name, e.Start.Format(time.RFC3339Nano), e.Period, e.Etag)
}

func showAll(es []reminder.Entry) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = show(e)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// same reports whether got is want: same reminder, Start equal as an
// instant, same Period, and same etag if want has one.
func same(got, want reminder.Entry) bool {
	return got.Grain == want.Grain && got.Name == want.Name && got.Start.Equal(want.Start) &&
		got.Period == want.Period && (want.Etag == "" || got.Etag == want.Etag)
}

// checker wraps a table with helpers that fail the test on unexpected
// errors.
type checker struct {
	t  *testing.T
	tb reminder.Table
}

func (h checker) upsert(e reminder.Entry) string {
	h.t.Helper()
	etag, err := h.tb.Upsert(ctxT(h.t), e)
	if err != nil {
		h.t.Fatalf("Upsert(%s): unexpected error: %v", show(e), err)
	}
	if etag == "" {
		h.t.Fatalf("Upsert(%s) returned an empty etag", show(e))
	}
	return etag
}

func (h checker) upsertConflict(e reminder.Entry) {
	h.t.Helper()
	etag, err := h.tb.Upsert(ctxT(h.t), e)
	if !errors.Is(err, reminder.ErrConflict) {
		h.t.Fatalf("Upsert(%s) = (%q, %v), want an error wrapping reminder.ErrConflict", show(e), etag, err)
	}
}

func (h checker) remove(id grain.ID, name, etag string) bool {
	h.t.Helper()
	removed, err := h.tb.Remove(ctxT(h.t), id, name, etag)
	if err != nil {
		h.t.Fatalf("Remove(%s#%s, etag %q): unexpected error: %v", id, name, etag, err)
	}
	return removed
}

func (h checker) removeConflict(id grain.ID, name, etag string) {
	h.t.Helper()
	removed, err := h.tb.Remove(ctxT(h.t), id, name, etag)
	if !errors.Is(err, reminder.ErrConflict) {
		h.t.Fatalf("Remove(%s#%s, etag %q) = (%v, %v), want an error wrapping reminder.ErrConflict", id, name, etag, removed, err)
	}
}

func (h checker) get(id grain.ID, name string) (reminder.Entry, bool) {
	h.t.Helper()
	e, ok, err := h.tb.Get(ctxT(h.t), id, name)
	if err != nil {
		h.t.Fatalf("Get(%s#%s): unexpected error: %v", id, name, err)
	}
	return e, ok
}

// expect checks that Get returns want (and want's etag, if it has one).
func (h checker) expect(want reminder.Entry) {
	h.t.Helper()
	got, ok := h.get(want.Grain, want.Name)
	if !ok {
		h.t.Fatalf("Get(%s#%s): missing, want %s", want.Grain, want.Name, show(want))
	}
	if !same(got, want) {
		h.t.Fatalf("Get(%s#%s) = %s, want %s", want.Grain, want.Name, show(got), show(want))
	}
}

func (h checker) expectMissing(id grain.ID, name string) {
	h.t.Helper()
	if got, ok := h.get(id, name); ok {
		h.t.Fatalf("Get(%s#%s) = %s, want no reminder", id, name, show(got))
	}
}

func (h checker) listGrain(id grain.ID) []reminder.Entry {
	h.t.Helper()
	es, err := h.tb.ListGrain(ctxT(h.t), id)
	if err != nil {
		h.t.Fatalf("ListGrain(%s): unexpected error: %v", id, err)
	}
	return es
}

func (h checker) listBucket(b int) []reminder.Entry {
	h.t.Helper()
	es, err := h.tb.ListBucket(ctxT(h.t), b)
	if err != nil {
		h.t.Fatalf("ListBucket(%d): unexpected error: %v", b, err)
	}
	return es
}

func (h checker) save(buckets []int, through time.Time) {
	h.t.Helper()
	if err := h.tb.SaveProgress(ctxT(h.t), buckets, through); err != nil {
		h.t.Fatalf("SaveProgress(%v, %s): unexpected error: %v", buckets, through.Format(time.RFC3339Nano), err)
	}
}

func (h checker) load(b int) time.Time {
	h.t.Helper()
	p, err := h.tb.LoadProgress(ctxT(h.t), b)
	if err != nil {
		h.t.Fatalf("LoadProgress(%d): unexpected error: %v", b, err)
	}
	return p
}

func (h checker) expectProgress(b int, want time.Time) {
	h.t.Helper()
	if got := h.load(b); !got.Equal(want) || got.IsZero() != want.IsZero() {
		h.t.Fatalf("LoadProgress(%d) = %s, want %s", b, fmtProgress(got), fmtProgress(want))
	}
}

func fmtProgress(p time.Time) string {
	if p.IsZero() {
		return "zero (never saved)"
	}
	return p.Format(time.RFC3339Nano)
}

func testRoundTrip(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	ist := time.FixedZone("IST", 5*3600+1800)
	now := time.Now().Truncate(time.Millisecond) // no monotonic reading
	entries := []reminder.Entry{
		entry(gid("a"), "tick", base, time.Minute),
		entry(gid("a"), "odd-period", base.Add(time.Millisecond), 1500*time.Millisecond),
		entry(gid("a"), "one-ms", base.Add(999*time.Millisecond), time.Millisecond),
		entry(gid("a"), "in-a-zone", time.Date(2026, 7, 1, 9, 30, 0, 125_000_000, ist), 24*time.Hour),
		entry(gid("a"), "now", now, time.Hour),
		entry(gid("b"), "past", time.Date(2001, 9, 9, 1, 46, 40, 123_000_000, time.UTC), 7*24*time.Hour),
		entry(gid("b"), "far", time.Date(2199, 12, 31, 23, 59, 59, 999_000_000, time.UTC), 10*365*24*time.Hour),
	}
	for i, e := range entries {
		h.expectMissing(e.Grain, e.Name)
		entries[i].Etag = h.upsert(e)
	}
	for _, e := range entries {
		h.expect(e)
	}
	h.expectMissing(gid("a"), "no-such-name")
	h.expectMissing(gid("no-such-grain"), "tick")
	h.expectMissing(grain.ID{Type: grainType + "2", Key: "a"}, "tick")
}

func testUpsertReplaces(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	e := entry(gid("a"), "r", base, time.Minute)
	e.Etag = h.upsert(e)
	h.expect(e)

	// Unconditionally, over an existing reminder.
	e2 := entry(gid("a"), "r", base.Add(time.Hour+250*time.Millisecond), 3*time.Second)
	e2.Etag = h.upsert(e2)
	h.expect(e2)

	// With the current etag.
	e3 := entry(gid("a"), "r", base.Add(-time.Hour), 90*time.Minute)
	e3.Etag = e2.Etag
	e3.Etag = h.upsert(e3)
	h.expect(e3)

	if got := h.listGrain(gid("a")); len(got) != 1 || !same(got[0], e3) {
		t.Fatalf("ListGrain after three upserts of one reminder = %s, want [%s]", showAll(got), show(e3))
	}
}

func testEtagChanges(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	seen := map[string]int{}
	e := entry(gid("a"), "r", base, time.Minute) // the same entry every time
	for i := range 6 {
		if i%2 == 1 {
			e.Etag = "" // unconditional upserts must change the etag too
		}
		etag := h.upsert(e)
		if j, dup := seen[etag]; dup {
			t.Fatalf("upsert #%d returned etag %q, already returned by upsert #%d", i, etag, j)
		}
		seen[etag] = i
		e.Etag = etag
	}
	h.expect(e)
}

func testStaleEtag(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	e1 := entry(gid("a"), "r", base, time.Minute)
	e1.Etag = h.upsert(e1)
	e2 := entry(gid("a"), "r", base.Add(time.Second), 2*time.Minute)
	e2.Etag = e1.Etag
	e2.Etag = h.upsert(e2)

	stale := entry(gid("a"), "r", base.Add(time.Hour), time.Hour)
	for _, etag := range []string{e1.Etag, "not-an-etag", "0", "-1", " ", e2.Etag + "0", "0" + e2.Etag, " " + e2.Etag} {
		if etag == e2.Etag {
			continue
		}
		stale.Etag = etag
		h.upsertConflict(stale)
	}
	h.expect(e2)

	// A non-empty etag for a reminder that does not exist: it cannot be
	// current, so nothing is created.
	missing := entry(gid("a"), "missing", base, time.Minute)
	for _, etag := range []string{e2.Etag, e1.Etag, "1"} {
		missing.Etag = etag
		h.upsertConflict(missing)
	}
	h.expectMissing(missing.Grain, missing.Name)
	other := entry(gid("b"), "r", base, time.Minute)
	other.Etag = e2.Etag
	h.upsertConflict(other)
	h.expectMissing(other.Grain, other.Name)
}

func testRemove(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	id := gid("a")
	e1 := entry(id, "r", base, time.Minute)
	e1.Etag = h.upsert(e1)
	e2 := e1
	e2.Etag = h.upsert(e2)

	// With an etag: a stale one conflicts and removes nothing.
	h.removeConflict(id, "r", e1.Etag)
	h.removeConflict(id, "r", "not-an-etag")
	h.expect(e2)
	if !h.remove(id, "r", e2.Etag) {
		t.Fatalf("Remove(%s#r, current etag %q) = false, want true", id, e2.Etag)
	}
	h.expectMissing(id, "r")
	// The reminder is gone: its last etag no longer matches anything.
	h.removeConflict(id, "r", e2.Etag)

	// Created again, it gets an etag it never had, and the old etags do
	// not match it (no ABA).
	e3 := entry(id, "r", base.Add(time.Hour), time.Hour)
	e3.Etag = h.upsert(e3)
	if e3.Etag == e1.Etag || e3.Etag == e2.Etag {
		t.Fatalf("Upsert after Remove returned etag %q, which the reminder had before (%q, %q): etags must never be reused",
			e3.Etag, e1.Etag, e2.Etag)
	}
	for _, old := range []string{e1.Etag, e2.Etag} {
		zombie := entry(id, "r", base, time.Second)
		zombie.Etag = old
		h.upsertConflict(zombie)
		h.removeConflict(id, "r", old)
	}
	h.expect(e3)

	// Without an etag: removes whatever is there.
	e4 := entry(id, "other", base, time.Minute)
	e4.Etag = h.upsert(e4)
	if !h.remove(id, "r", "") {
		t.Fatalf("Remove(%s#r, \"\") of an existing reminder = false, want true", id)
	}
	h.expectMissing(id, "r")
	h.expect(e4) // another reminder of the grain is untouched
}

func testRemoveMissing(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	id := gid("a")
	for range 2 {
		if h.remove(id, "never", "") {
			t.Fatalf("Remove(%s#never, \"\") of a reminder that never existed = true, want false", id)
		}
	}
	e := entry(id, "r", base, time.Minute)
	e.Etag = h.upsert(e)
	if h.remove(id, "never", "") {
		t.Fatalf("Remove(%s#never, \"\") = true, but only %s#r exists", id, id)
	}
	h.removeConflict(id, "never", e.Etag)
	h.removeConflict(id, "never", "1")
	h.expect(e)
	if !h.remove(id, "r", "") {
		t.Fatal("Remove of an existing reminder = false")
	}
	if h.remove(id, "r", "") {
		t.Fatalf("second Remove(%s#r, \"\") = true, want false: it is gone", id)
	}
}

// isolatedGrains are distinct grains that naive encodings confuse: keys
// that are prefixes of each other, components containing separators and
// escape characters, unicode.
var isolatedGrains = []grain.ID{
	{Type: "T", Key: "k"},
	{Type: "T", Key: "k2"},
	{Type: "T", Key: "k/"},
	{Type: "T", Key: "k/x"},
	{Type: "T", Key: "k%"},
	{Type: "T", Key: "k%2F"},
	{Type: "T", Key: "k x"},
	{Type: "T2", Key: "k"},
	{Type: "Tk", Key: "x"},
	{Type: "a/b", Key: "c"},
	{Type: "a", Key: "b/c"},
	{Type: "a%2Fb", Key: "c"},
	{Type: "a", Key: "b#c"},
	{Type: "a#b", Key: "c"},
	{Type: "ünï", Key: "κλειδί"},
	{Type: "ünï", Key: "κλειδί/état"},
	{Type: "T", Key: "日本語"},
}

// grainNames are reminder names in no particular order, among them pairs
// whose order changes under common escapes ("a b" < "a!" byte by byte, but
// not once the space is escaped as %20).
var grainNames = []string{"b", "a b", "a!", "a", "A", "a/", "a%", "a~", "a/b", "é", "z", "10", "9", "a#", "名前"}

func testListGrain(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}

	// Order: by name, byte by byte.
	id := gid("sorted")
	want := make([]reminder.Entry, 0, len(grainNames))
	for i, name := range grainNames {
		e := entry(id, name, base.Add(time.Duration(i)*time.Second), time.Duration(i+1)*time.Minute)
		e.Etag = h.upsert(e)
		want = append(want, e)
	}
	slices.SortFunc(want, func(a, b reminder.Entry) int { return strings.Compare(a.Name, b.Name) })
	checkList(t, fmt.Sprintf("ListGrain(%s)", id), h.listGrain(id), want)

	// Isolation: each grain has a reminder "r" and one of its own; no
	// grain's list shows another's.
	byGrain := make([][]reminder.Entry, len(isolatedGrains))
	for i, g := range isolatedGrains {
		for _, name := range []string{fmt.Sprintf("only-%02d", i), "r"} { // sorted
			e := entry(g, name, base.Add(time.Duration(i)*time.Minute), time.Duration(i+1)*time.Second)
			e.Etag = h.upsert(e)
			byGrain[i] = append(byGrain[i], e)
		}
	}
	for i, g := range isolatedGrains {
		checkList(t, fmt.Sprintf("ListGrain(%q)", g.String()), h.listGrain(g), byGrain[i])
		h.expect(byGrain[i][1])
	}
	for _, g := range []grain.ID{{Type: "T", Key: "k/x/"}, {Type: "T", Key: "K"}, {Type: "a", Key: "b"}, {Type: "T/k", Key: "x"}} {
		if got := h.listGrain(g); len(got) != 0 {
			t.Fatalf("ListGrain(%q) of a grain without reminders = %s, want none", g.String(), showAll(got))
		}
		h.expectMissing(g, "r")
	}

	// Removing one grain's reminder leaves the others alone.
	h.remove(isolatedGrains[0], "r", "")
	checkList(t, "ListGrain after Remove", h.listGrain(isolatedGrains[0]), byGrain[0][:1])
	for i, g := range isolatedGrains[1:] {
		checkList(t, fmt.Sprintf("ListGrain(%q) after removing a reminder of %q", g.String(), isolatedGrains[0].String()),
			h.listGrain(g), byGrain[i+1])
	}
}

// checkList checks that got is want, in want's order.
func checkList(t *testing.T, what string, got, want []reminder.Entry) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = same(got[i], want[i])
	}
	if !ok {
		t.Fatalf("%s =\n  %s\nwant\n  %s", what, showAll(got), showAll(want))
	}
}

// bucketGrains, bigGrainReminders: the reminders testListBucket stores.
// Enough grains to cover most buckets, and one grain with more reminders
// than a small page or batch of a table, all in one bucket.
const (
	bucketGrains      = 600
	bigGrainReminders = 300
)

type rkey struct {
	id   grain.ID
	name string
}

func testListBucket(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	// Keys that differ in many bytes: the top bits of FNV-1a spread
	// them over the buckets better than "g-0", "g-1", ...
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]string, bucketGrains)
	for i := range keys {
		keys[i] = fmt.Sprintf("g-%016x", r.Uint64())
	}
	var all []reminder.Entry
	for i, key := range keys {
		id := gid(key)
		all = append(all, entry(id, "a", base.Add(time.Duration(i)*time.Millisecond), time.Duration(i+1)*time.Second))
		if i%3 == 0 {
			all = append(all, entry(id, "b", base, time.Hour))
		}
	}
	big := gid("big")
	for i := range bigGrainReminders {
		all = append(all, entry(big, fmt.Sprintf("n%03d", i), base.Add(time.Duration(i)*time.Second), time.Minute))
	}
	want := upsertAll(t, tb, all)

	check := func(when string) {
		t.Helper()
		seen := map[rkey]int{}
		for b := range reminder.Buckets {
			for _, e := range h.listBucket(b) {
				k := rkey{e.Grain, e.Name}
				if got := reminder.BucketOf(reminder.Hash(e.Grain)); got != b {
					t.Fatalf("%s: ListBucket(%d) returned %s, whose grain is in bucket %d", when, b, show(e), got)
				}
				w, ok := want[k]
				if !ok {
					t.Fatalf("%s: ListBucket(%d) returned %s, which was never stored (or was removed)", when, b, show(e))
				}
				if prev, dup := seen[k]; dup {
					t.Fatalf("%s: %s returned twice (by ListBucket(%d) and ListBucket(%d))", when, show(e), prev, b)
				}
				seen[k] = b
				if !same(e, w) {
					t.Fatalf("%s: ListBucket(%d) returned %s, want %s", when, b, show(e), show(w))
				}
			}
		}
		if len(seen) != len(want) {
			for k, w := range want {
				if _, ok := seen[k]; !ok {
					t.Fatalf("%s: the union of ListBucket over all %d buckets has %d reminders, want %d; missing e.g. %s (bucket %d)",
						when, reminder.Buckets, len(seen), len(want), show(w), reminder.BucketOf(reminder.Hash(k.id)))
				}
			}
		}
	}
	check("after upserting")

	buckets := map[int]bool{}
	for k := range want {
		buckets[reminder.BucketOf(reminder.Hash(k.id))] = true
	}
	if len(buckets) < reminder.Buckets*3/4 {
		t.Fatalf("suite bug: the reminders cover only %d of %d buckets", len(buckets), reminder.Buckets)
	}

	// Removals and replacements show in the lists.
	for i := 0; i < bigGrainReminders; i += 2 {
		name := fmt.Sprintf("n%03d", i)
		h.remove(big, name, "")
		delete(want, rkey{big, name})
	}
	for i := 0; i < bucketGrains; i += 7 {
		e := entry(gid(keys[i]), "a", base.Add(-time.Hour), 42*time.Second)
		e.Etag = h.upsert(e)
		want[rkey{e.Grain, e.Name}] = e
	}
	check("after removing and replacing some")
}

// upsertAll upserts entries with a few concurrent workers and returns them
// by reminder, with their etags.
func upsertAll(t *testing.T, tb reminder.Table, entries []reminder.Entry) map[rkey]reminder.Entry {
	t.Helper()
	const workers = 8
	out := make([]reminder.Entry, len(entries))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(entries) || t.Failed() {
					return
				}
				e := entries[i]
				etag, err := tb.Upsert(ctxT(t), e)
				if err != nil || etag == "" {
					t.Errorf("Upsert(%s) = (%q, %v), want an etag", show(e), etag, err)
					return
				}
				e.Etag = etag
				out[i] = e
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	m := make(map[rkey]reminder.Entry, len(out))
	for _, e := range out {
		m[rkey{e.Grain, e.Name}] = e
	}
	return m
}

func testInvalid(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	id := gid("a")
	for _, c := range []struct {
		name string
		e    reminder.Entry
	}{
		{"no type", entry(grain.ID{Key: "a"}, "r", base, time.Minute)},
		{"no key", entry(grain.ID{Type: grainType}, "r", base, time.Minute)},
		{"zero id", entry(grain.ID{}, "r", base, time.Minute)},
		{"no name", entry(id, "", base, time.Minute)},
		{"zero period", entry(id, "r", base, 0)},
		{"negative period", entry(id, "r", base, -time.Second)},
		{"an identity over MaxIDBytes", entry(id, strings.Repeat("n", reminder.MaxIDBytes), base, time.Minute)},
	} {
		etag, err := tb.Upsert(ctxT(t), c.e)
		if !errors.Is(err, reminder.ErrInvalid) {
			t.Fatalf("Upsert of an entry with %s (%s) = (%q, %v), want an error wrapping reminder.ErrInvalid",
				c.name, show(c.e), etag, err)
		}
		if c.e.Grain.Type != "" && c.e.Grain.Key != "" {
			h.expectMissing(c.e.Grain, c.e.Name)
		}
	}
	if got := h.listGrain(id); len(got) != 0 {
		t.Fatalf("ListGrain(%s) after only invalid upserts = %s, want none", id, showAll(got))
	}

	// An existing reminder is not replaced by an invalid entry.
	e := entry(id, "r", base, time.Minute)
	e.Etag = h.upsert(e)
	bad := entry(id, "r", base, -time.Minute)
	bad.Etag = e.Etag
	if _, err := tb.Upsert(ctxT(t), bad); !errors.Is(err, reminder.ErrInvalid) {
		t.Fatalf("Upsert(%s) over an existing reminder: %v, want an error wrapping reminder.ErrInvalid", show(bad), err)
	}
	h.expect(e)

	// Buckets outside [0, Buckets).
	h.save([]int{0}, base)
	for _, b := range []int{-1, reminder.Buckets, reminder.Buckets + 1, 1 << 20} {
		if es, err := tb.ListBucket(ctxT(t), b); !errors.Is(err, reminder.ErrInvalid) {
			t.Fatalf("ListBucket(%d) = (%d entries, %v), want an error wrapping reminder.ErrInvalid", b, len(es), err)
		}
		if p, err := tb.LoadProgress(ctxT(t), b); !errors.Is(err, reminder.ErrInvalid) {
			t.Fatalf("LoadProgress(%d) = (%s, %v), want an error wrapping reminder.ErrInvalid", b, fmtProgress(p), err)
		}
		later := base.Add(time.Hour)
		if err := tb.SaveProgress(ctxT(t), []int{0, 1, b}, later); !errors.Is(err, reminder.ErrInvalid) {
			t.Fatalf("SaveProgress([0 1 %d]) = %v, want an error wrapping reminder.ErrInvalid", b, err)
		}
		// Nothing was saved, not even for the valid buckets.
		h.expectProgress(0, base)
		h.expectProgress(1, time.Time{})
	}
}

func testProgress(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	for b := range reminder.Buckets {
		h.expectProgress(b, time.Time{})
	}
	t1 := base
	t2 := base.Add(time.Hour + 333*time.Millisecond)
	t3 := base.Add(48 * time.Hour)

	// Several buckets in one call; the others stay unsaved.
	h.save([]int{3, 7, 200}, t1)
	for _, b := range []int{3, 7, 200} {
		h.expectProgress(b, t1)
	}
	for _, b := range []int{0, 4, 6, 8, 199, 201, 255} {
		h.expectProgress(b, time.Time{})
	}

	// Never backwards: earlier times change nothing.
	h.save([]int{3}, t1.Add(-time.Millisecond))
	h.expectProgress(3, t1)
	h.save([]int{3, 7, 200}, time.Time{})
	h.expectProgress(3, t1)

	// Forwards, for some.
	h.save([]int{3, 7, 9}, t2)
	h.expectProgress(3, t2)
	h.expectProgress(7, t2)
	h.expectProgress(9, t2)
	h.expectProgress(200, t1)

	// One call where some buckets move forwards and others are already
	// later: each keeps the later of the two.
	mid := t1.Add(30 * time.Minute)
	h.save([]int{200, 3, 4}, mid)
	h.expectProgress(200, mid)
	h.expectProgress(3, t2)
	h.expectProgress(4, mid)

	// Repeated buckets, an empty list.
	h.save([]int{5, 5, 5}, t1)
	h.expectProgress(5, t1)
	h.save(nil, t3)
	h.save([]int{}, t3)
	h.expectProgress(5, t1)

	// A time in another zone is the same instant.
	zoned := t2.Add(time.Minute).In(time.FixedZone("UTC-7", -7*3600))
	h.save([]int{9}, zoned)
	h.expectProgress(9, zoned)

	// All buckets at once, mixed: some are later than the time saved.
	all := make([]int, reminder.Buckets)
	for i := range all {
		all[reminder.Buckets-1-i] = i
	}
	h.save(all, t2.Add(-time.Minute))
	for b := range reminder.Buckets {
		want := t2.Add(-time.Minute)
		switch b {
		case 3, 7:
			want = t2
		case 9:
			want = zoned
		}
		h.expectProgress(b, want)
	}
	h.save(all, t3)
	for b := range reminder.Buckets {
		h.expectProgress(b, t3)
	}
	h.save(all, t1)
	for b := range reminder.Buckets {
		h.expectProgress(b, t3)
	}
}

// testProgressConcurrent: workers save progress for overlapping sets of
// buckets at shuffled times; no save may undo a later one.
func testProgressConcurrent(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	const (
		workers   = 8
		perWorker = 12
	)
	buckets := []int{0, 1, 2, 127, 128, 255}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for _, i := range r.Perm(perWorker) {
				through := base.Add(time.Duration(i*workers+w) * time.Second)
				bs := []int{buckets[r.IntN(len(buckets))], buckets[r.IntN(len(buckets))], buckets[w%len(buckets)]}
				if w%2 == 0 {
					bs = buckets
				}
				if err := tb.SaveProgress(ctxT(t), bs, through); err != nil {
					t.Errorf("worker %d: SaveProgress(%v): %v", w, bs, err)
					return
				}
				for _, b := range bs {
					p, err := tb.LoadProgress(ctxT(t), b)
					if err != nil {
						t.Errorf("worker %d: LoadProgress(%d): %v", w, b, err)
						return
					}
					if p.Before(through) {
						t.Errorf("worker %d: LoadProgress(%d) = %s right after SaveProgress saved %s: progress moved backwards",
							w, b, fmtProgress(p), fmtProgress(through))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Even workers saved every bucket with every time: the largest wins.
	last := base.Add(time.Duration((perWorker-1)*workers+workers-2) * time.Second)
	for _, b := range buckets {
		if got := h.load(b); got.Before(last) {
			t.Fatalf("LoadProgress(%d) = %s after concurrent saves, want at least %s: progress moved backwards",
				b, fmtProgress(got), fmtProgress(last))
		}
	}
}

func testConcurrentUpserts(t *testing.T, tb reminder.Table) {
	const workers = 8

	// Distinct reminders, on two grains and on a grain each: none is lost.
	t.Run("distinct", func(t *testing.T) {
		h := checker{t, tb}
		const perWorker = 25
		var entries []reminder.Entry
		for w := range workers {
			for i := range perWorker {
				g := gid(fmt.Sprintf("shared-%d", w%2))
				if i%2 == 1 {
					g = gid(fmt.Sprintf("own-%d", w))
				}
				entries = append(entries, entry(g, fmt.Sprintf("w%d-%02d", w, i), base.Add(time.Duration(i)*time.Second), time.Duration(w+1)*time.Minute))
			}
		}
		// Interleave the workers' entries so that they run concurrently.
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
		want := upsertAll(t, tb, entries)
		etags := map[string]rkey{}
		for k, e := range want {
			if prev, dup := etags[e.Etag]; dup {
				t.Fatalf("etag %q returned for both %s#%s and %s#%s", e.Etag, prev.id, prev.name, k.id, k.name)
			}
			etags[e.Etag] = k
		}
		grains := map[grain.ID][]reminder.Entry{}
		for _, e := range want {
			grains[e.Grain] = append(grains[e.Grain], e)
		}
		for id, es := range grains {
			slices.SortFunc(es, func(a, b reminder.Entry) int { return strings.Compare(a.Name, b.Name) })
			checkList(t, fmt.Sprintf("ListGrain(%s) after concurrent upserts", id), h.listGrain(id), es)
		}
	})

	// Compare-and-set from one etag: exactly one of the racers wins.
	t.Run("cas-race", func(t *testing.T) {
		h := checker{t, tb}
		e := entry(gid("race"), "r", base, time.Minute)
		e.Etag = h.upsert(e)
		for round := range 5 {
			var (
				wins, conflicts atomic.Int32
				winner          atomic.Value
				wg              sync.WaitGroup
				start           = make(chan struct{})
			)
			for w := range workers {
				wg.Go(func() {
					<-start
					mine := entry(e.Grain, e.Name, base.Add(time.Duration(round)*time.Hour), time.Duration(w+1)*time.Second)
					mine.Etag = e.Etag
					etag, err := tb.Upsert(ctxT(t), mine)
					switch {
					case err == nil:
						wins.Add(1)
						mine.Etag = etag
						winner.Store(mine)
					case errors.Is(err, reminder.ErrConflict):
						conflicts.Add(1)
					default:
						t.Errorf("round %d: Upsert: unexpected error: %v", round, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			if wins.Load() != 1 || conflicts.Load() != workers-1 {
				t.Fatalf("round %d: %d upserts raced from etag %q: %d won, %d got ErrConflict; want exactly 1 winner",
					round, workers, e.Etag, wins.Load(), conflicts.Load())
			}
			e = winner.Load().(reminder.Entry)
			h.expect(e)
		}
	})
}

func testCancelledContext(t *testing.T, tb reminder.Table) {
	h := checker{t, tb}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()

	for i, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	} {
		id := gid(c.name)
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, c.want) {
				t.Fatalf("%s with a %s context: got %v, want an error wrapping %v", op, c.name, err, c.want)
			}
		}
		_, err := tb.Upsert(c.ctx, entry(id, "new", base, time.Minute))
		check("Upsert", err)
		h.expectMissing(id, "new")

		e := entry(id, "r", base, time.Minute)
		e.Etag = h.upsert(e)
		changed := entry(id, "r", base.Add(time.Hour), time.Hour)
		_, err = tb.Upsert(c.ctx, changed)
		check("Upsert", err)
		changed.Etag = e.Etag
		_, err = tb.Upsert(c.ctx, changed)
		check("Upsert with an etag", err)
		_, err = tb.Remove(c.ctx, id, "r", "")
		check("Remove", err)
		_, err = tb.Remove(c.ctx, id, "r", e.Etag)
		check("Remove with an etag", err)
		h.expect(e)

		_, _, err = tb.Get(c.ctx, id, "r")
		check("Get", err)
		_, err = tb.ListGrain(c.ctx, id)
		check("ListGrain", err)
		_, err = tb.ListBucket(c.ctx, reminder.BucketOf(reminder.Hash(id)))
		check("ListBucket", err)

		b := 10 + i
		h.save([]int{b}, base)
		err = tb.SaveProgress(c.ctx, []int{b, b + 1}, base.Add(time.Hour))
		check("SaveProgress", err)
		_, err = tb.LoadProgress(c.ctx, b)
		check("LoadProgress", err)
		h.expectProgress(b, base)
		h.expectProgress(b+1, time.Time{})
	}
}
