package remindertest_test

import (
	"cmp"
	"context"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/reminder/remindertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mutantEnv names the broken table TestMutantChild runs the suite on.
const mutantEnv = "REMINDERTEST_MUTANT"

// mutants are tables broken in one way each, with the subtest of the suite
// that must catch the defect. TestSuiteCatchesMutants proves that every
// subtest can fail.
var mutants = []struct{ name, subtest string }{
	{"lossy-start", "round-trip"},
	{"lossy-period", "round-trip"},
	{"get-without-etag", "round-trip"},
	{"upsert-keeps-first", "upsert-replaces"},
	{"constant-etag", "etag-changes-on-every-upsert"},
	{"ignore-stale-etag", "stale-etag"},
	{"cas-creates-missing", "stale-etag"},
	{"remove-ignores-etag", "remove"},
	{"per-key-etag", "remove"},
	{"remove-missing-true", "remove-missing"},
	{"unsorted", "list-grain"},
	{"string-key", "list-grain"},
	{"prefix-grain", "list-grain"},
	{"wrong-bucket", "list-bucket"},
	{"bucket-truncated", "list-bucket"},
	{"bucket-page-overlap", "list-bucket"},
	{"accept-invalid", "invalid"},
	{"bucket-unchecked", "invalid"},
	{"progress-overwrites", "progress"},
	{"progress-first-bucket", "progress"},
	{"progress-epoch", "progress"},
	{"progress-racy", "progress-concurrent"},
	{"lost-update", "concurrent-upserts"},
	{"racy-cas", "concurrent-upserts"},
	{"ignore-context", "cancelled-context"},
}

// TestSuiteCatchesMutants runs the suite on each mutant in a child process
// (this test binary again, running TestMutantChild) and checks that the
// child failed in the expected subtest. The correct fake must pass.
func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("in a child process")
	}
	cases := append([]struct{ name, subtest string }{{"none", ""}}, mutants...)
	for _, m := range cases {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMutantChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			if m.subtest == "" {
				if err != nil {
					t.Fatalf("the correct fake failed the suite: %v\n%s", err, out)
				}
				if !strings.Contains(string(out), "PASS") {
					t.Fatalf("child did not run the suite:\n%s", out)
				}
				return
			}
			if err == nil {
				t.Fatalf("suite passed a table broken as %q; subtest %s should have failed:\n%s", m.name, m.subtest, out)
			}
			if want := "--- FAIL: TestMutantChild/" + m.subtest + " "; !strings.Contains(string(out), want) {
				t.Fatalf("mutant %q: want a failure in subtest %s, got:\n%s", m.name, m.subtest, out)
			}
		})
	}
}

// TestMutantChild runs the suite on the mutant named by
// $REMINDERTEST_MUTANT; without it, it is skipped.
func TestMutantChild(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	remindertest.Run(t, func(*testing.T) reminder.Table {
		return &fake{mutant: name, recs: map[any]reminder.Entry{}, perKey: map[any]uint64{}, progress: map[int]time.Time{}}
	})
}

// fake is a straightforward correct table, unless mutant names a defect.
type fake struct {
	mutant   string
	mu       sync.Mutex
	seq      uint64
	recs     map[any]reminder.Entry
	perKey   map[any]uint64
	progress map[int]time.Time
}

type fkey struct {
	id   grain.ID
	name string
}

func (f *fake) key(id grain.ID, name string) any {
	if f.mutant == "string-key" {
		return id.String() + "#" + name
	}
	return fkey{id, name}
}

func (f *fake) ctxErr(ctx context.Context) error {
	if f.mutant == "ignore-context" {
		return nil
	}
	return ctx.Err()
}

func (f *fake) validate(e reminder.Entry) error {
	if f.mutant == "accept-invalid" {
		return nil
	}
	return e.Validate()
}

func (f *fake) checkBucket(b int) error {
	if f.mutant != "bucket-unchecked" && (b < 0 || b >= reminder.Buckets) {
		return reminder.ErrInvalid
	}
	return nil
}

// matches reports whether etag permits a compare-and-set on cur.
func (f *fake) matches(cur reminder.Entry, ok bool, etag string) bool {
	switch {
	case etag == "":
		return true
	case f.mutant == "ignore-stale-etag" && ok:
		return true
	case f.mutant == "cas-creates-missing" && !ok:
		return true
	}
	return ok && cur.Etag == etag
}

func (f *fake) Upsert(ctx context.Context, e reminder.Entry) (string, error) {
	if err := f.validate(e); err != nil {
		return "", err
	}
	if err := f.ctxErr(ctx); err != nil {
		return "", err
	}
	switch f.mutant {
	case "lossy-start":
		e.Start = e.Start.Truncate(time.Second)
	case "lossy-period":
		e.Period = e.Period.Truncate(time.Second)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(e.Grain, e.Name)
	cur, ok := f.recs[k]
	if !f.matches(cur, ok, e.Etag) {
		return "", reminder.ErrConflict
	}
	if f.mutant == "racy-cas" {
		// Check, then act without holding the lock in between.
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
		f.mu.Lock()
	}
	switch f.mutant {
	case "constant-etag":
		e.Etag = "1"
	case "per-key-etag":
		f.perKey[k]++
		e.Etag = strconv.FormatUint(f.perKey[k], 10)
	default:
		f.seq++
		e.Etag = strconv.FormatUint(f.seq, 10)
	}
	if f.mutant == "upsert-keeps-first" && ok {
		e.Start, e.Period = cur.Start, cur.Period
	}
	if f.mutant == "lost-update" {
		// Copy on write, without holding the lock in between.
		recs := maps.Clone(f.recs)
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
		recs[k] = e
		f.mu.Lock()
		f.recs = recs
		return e.Etag, nil
	}
	f.recs[k] = e
	return e.Etag, nil
}

func (f *fake) Remove(ctx context.Context, id grain.ID, name, etag string) (bool, error) {
	if err := f.ctxErr(ctx); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(id, name)
	cur, ok := f.recs[k]
	if f.mutant != "remove-ignores-etag" && !f.matches(cur, ok, etag) {
		return false, reminder.ErrConflict
	}
	delete(f.recs, k)
	if f.mutant == "per-key-etag" {
		delete(f.perKey, k)
	}
	return ok || f.mutant == "remove-missing-true", nil
}

func (f *fake) Get(ctx context.Context, id grain.ID, name string) (reminder.Entry, bool, error) {
	if err := f.ctxErr(ctx); err != nil {
		return reminder.Entry{}, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.recs[f.key(id, name)]
	if f.mutant == "get-without-etag" {
		e.Etag = ""
	}
	return e, ok, nil
}

func (f *fake) ListGrain(ctx context.Context, id grain.ID) ([]reminder.Entry, error) {
	if err := f.ctxErr(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []reminder.Entry
	for _, e := range f.recs {
		if e.Grain == id || f.mutant == "prefix-grain" && strings.HasPrefix(e.Grain.String(), id.String()) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b reminder.Entry) int { return cmp.Compare(a.Name, b.Name) })
	if f.mutant == "unsorted" {
		slices.Reverse(out)
	}
	return out, nil
}

func (f *fake) ListBucket(ctx context.Context, b int) ([]reminder.Entry, error) {
	if err := f.checkBucket(b); err != nil {
		return nil, err
	}
	if err := f.ctxErr(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []reminder.Entry
	for _, e := range f.recs {
		h := reminder.Hash(e.Grain)
		bucket := reminder.BucketOf(h)
		if f.mutant == "wrong-bucket" {
			bucket = int(h & 0xff)
		}
		if bucket == b {
			out = append(out, e)
		}
	}
	switch {
	case f.mutant == "bucket-truncated" && len(out) > 256:
		out = out[:256]
	case f.mutant == "bucket-page-overlap" && len(out) > 100:
		out = append(out, out[99]) // the next page started at the last key, not after it
	}
	return out, nil
}

func (f *fake) SaveProgress(ctx context.Context, buckets []int, through time.Time) error {
	for _, b := range buckets {
		if err := f.checkBucket(b); err != nil {
			return err
		}
	}
	if err := f.ctxErr(ctx); err != nil {
		return err
	}
	if f.mutant == "progress-first-bucket" && len(buckets) > 1 {
		buckets = buckets[:1]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range buckets {
		cur := f.progress[b]
		if f.mutant == "progress-racy" {
			// Read, then write without holding the lock in between.
			f.mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			f.mu.Lock()
		}
		if through.After(cur) || f.mutant == "progress-overwrites" {
			f.progress[b] = through
		}
	}
	return nil
}

func (f *fake) LoadProgress(ctx context.Context, b int) (time.Time, error) {
	if err := f.checkBucket(b); err != nil {
		return time.Time{}, err
	}
	if err := f.ctxErr(ctx); err != nil {
		return time.Time{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.progress[b]
	if !ok && f.mutant == "progress-epoch" {
		return time.Unix(0, 0), nil
	}
	return p, nil
}
