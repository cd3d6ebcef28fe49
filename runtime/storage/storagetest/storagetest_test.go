package storagetest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mutantEnv names the broken provider TestMutantChild runs the suite on.
const mutantEnv = "STORAGETEST_MUTANT"

// mutants are providers broken in one way each, with the subtest of the
// suite that must catch the defect. TestSuiteCatchesMutants proves that
// every subtest can fail.
var mutants = []struct{ name, subtest string }{
	{"missing-has-etag", "read-missing"},
	{"no-copy-in", "write-then-read"},
	{"no-copy-out", "write-then-read"},
	{"create-overwrites", "write-empty-etag-over-existing"},
	{"ignore-stale-etag", "stale-etag"},
	{"accept-zero-etag", "bogus-etag"},
	{"constant-etag", "etag-changes-on-every-write"},
	{"per-key-etag", "clear"},
	{"clear-ignores-etag", "clear"},
	{"string-key", "keys-isolated"},
	{"empty-is-missing", "empty-value"},
	{"racy-cas", "concurrent-writers"},
	{"ignore-limit", "large-values"},
	{"ignore-context", "cancelled-context"},
}

// TestSuiteCatchesMutants runs the suite on each mutant in a child process
// (this test binary again, running TestMutantChild) and checks that the
// child failed in the expected subtest. A correct fake must pass.
func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("in a child process")
	}
	cases := append([]struct{ name, subtest string }{{"none", ""}}, mutants...)
	for _, m := range cases {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
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
				t.Fatalf("suite passed a provider broken as %q; subtest %s should have failed:\n%s", m.name, m.subtest, out)
			}
			if want := "--- FAIL: TestMutantChild/" + m.subtest + " "; !strings.Contains(string(out), want) {
				t.Fatalf("mutant %q: want a failure in subtest %s, got:\n%s", m.name, m.subtest, out)
			}
		})
	}
}

// TestMutantChild runs the suite on the mutant named by $STORAGETEST_MUTANT;
// without it, it is skipped.
func TestMutantChild(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	storagetest.Run(t, func(*testing.T) storage.Provider {
		return &fake{mutant: name, recs: map[any]rec{}, perKey: map[any]uint64{}}
	})
}

// fake is a straightforward correct provider, unless mutant names a defect.
type fake struct {
	mutant string
	mu     sync.Mutex
	seq    uint64
	recs   map[any]rec
	perKey map[any]uint64
}

type rec struct {
	data []byte
	etag string
}

func (f *fake) MaxValueBytes() int { return 100 << 10 }

func (f *fake) key(k storage.Key) any {
	if f.mutant == "string-key" {
		return k.String()
	}
	return k
}

func (f *fake) ctxErr(ctx context.Context) error {
	if f.mutant == "ignore-context" {
		return nil
	}
	return ctx.Err()
}

func (f *fake) Read(ctx context.Context, k storage.Key) ([]byte, string, error) {
	if err := f.ctxErr(ctx); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[f.key(k)]
	switch {
	case !ok && f.mutant == "missing-has-etag":
		return nil, "0", nil
	case !ok:
		return nil, "", nil
	case f.mutant == "empty-is-missing" && len(r.data) == 0:
		return nil, "", nil
	case f.mutant == "no-copy-out":
		return r.data, r.etag, nil
	}
	return append([]byte{}, r.data...), r.etag, nil
}

func (f *fake) matches(r rec, ok bool, etag string) bool {
	switch f.mutant {
	case "create-overwrites":
		if etag == "" {
			return true
		}
	case "ignore-stale-etag":
		if etag != "" && ok {
			return true
		}
	case "accept-zero-etag":
		if etag == "0" {
			return true
		}
	}
	return r.etag == etag
}

func (f *fake) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	if err := f.ctxErr(ctx); err != nil {
		return "", err
	}
	if f.mutant != "ignore-limit" && len(data) > f.MaxValueBytes() {
		return "", fmt.Errorf("fake: %d bytes > %d: %w", len(data), f.MaxValueBytes(), storage.ErrTooLarge)
	}
	if f.mutant != "no-copy-in" {
		data = append([]byte{}, data...)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := f.key(k)
	r, ok := f.recs[key]
	if !f.matches(r, ok, etag) {
		return "", storage.ErrConflict
	}
	if f.mutant == "racy-cas" {
		// Check, then act without holding the lock in between.
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
		f.mu.Lock()
	}
	var ne string
	switch f.mutant {
	case "constant-etag":
		ne = "1"
	case "per-key-etag":
		f.perKey[key]++
		ne = strconv.FormatUint(f.perKey[key], 10)
	default:
		f.seq++
		ne = strconv.FormatUint(f.seq, 10)
	}
	f.recs[key] = rec{data: data, etag: ne}
	return ne, nil
}

func (f *fake) Clear(ctx context.Context, k storage.Key, etag string) error {
	if err := f.ctxErr(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := f.key(k)
	r, ok := f.recs[key]
	if f.mutant != "clear-ignores-etag" && !f.matches(r, ok, etag) {
		return storage.ErrConflict
	}
	delete(f.recs, key)
	if f.mutant == "per-key-etag" {
		delete(f.perKey, key)
	}
	return nil
}
