package storage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryConformance(t *testing.T) {
	storagetest.Run(t, func(*testing.T) storage.Provider { return storage.NewMemory() })
}

func TestMemoryZeroValueConformance(t *testing.T) {
	storagetest.Run(t, func(*testing.T) storage.Provider { return new(storage.Memory) })
}

func TestMemoryConformanceWithLimit(t *testing.T) {
	storagetest.Run(t, func(*testing.T) storage.Provider {
		return storage.NewMemory(storage.WithMaxValueBytes(1000))
	})
}

func TestMemoryMaxValueBytes(t *testing.T) {
	for _, tc := range []struct {
		opts []storage.MemoryOption
		want int
	}{
		{nil, 0},
		{[]storage.MemoryOption{storage.WithMaxValueBytes(512)}, 512},
		{[]storage.MemoryOption{storage.WithMaxValueBytes(0)}, 0},
		{[]storage.MemoryOption{storage.WithMaxValueBytes(-3)}, 0},
	} {
		if got := storage.NewMemory(tc.opts...).MaxValueBytes(); got != tc.want {
			t.Errorf("MaxValueBytes() = %d, want %d", got, tc.want)
		}
	}
	var p storage.Provider = storage.NewMemory()
	if _, ok := p.(storage.Limiter); !ok {
		t.Error("*Memory does not implement storage.Limiter")
	}
}

func TestMemoryTooLargeMessage(t *testing.T) {
	p := storage.NewMemory(storage.WithMaxValueBytes(10))
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	_, err := p.Write(t.Context(), k, make([]byte, 11), "")
	want := "storage: write T/k#s: value is 11 bytes, limit is 10: grain: too large"
	if err == nil || err.Error() != want {
		t.Fatalf("Write of 11 bytes with limit 10: %v, want %q", err, want)
	}
}

func TestMemoryConflictMessage(t *testing.T) {
	p := storage.NewMemory()
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	_, err := p.Write(ctx, k, nil, "7")
	if want := `storage: write T/k#s: etag "7" given but there is no record: grain: storage etag conflict`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	etag, err := p.Write(ctx, k, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Clear(ctx, k, "")
	if want := fmt.Sprintf(`storage: clear T/k#s: etag "" given but the current etag is %q: grain: storage etag conflict`, etag); err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestMemoryEtagsNeverReused writes, clears and rewrites many keys from
// many goroutines and checks that no etag is ever issued twice.
func TestMemoryEtagsNeverReused(t *testing.T) {
	p := storage.NewMemory()
	ctx := t.Context()
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			k := storage.Key{GrainType: "T", GrainKey: fmt.Sprint(w % 2), State: "s"}
			for range 200 {
				_, etag, err := p.Read(ctx, k)
				if err != nil {
					t.Error(err)
					return
				}
				ne, err := p.Write(ctx, k, []byte("v"), etag)
				if errors.Is(err, storage.ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[ne] {
					t.Errorf("etag %q issued twice", ne)
				}
				seen[ne] = true
				mu.Unlock()
				if err := p.Clear(ctx, k, ne); err != nil && !errors.Is(err, storage.ErrConflict) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) == 0 {
		t.Fatal("no write succeeded")
	}
}

func BenchmarkMemory(b *testing.B) {
	storagetest.Bench(b, func(*testing.B) storage.Provider { return storage.NewMemory() })
}

func ExampleMemory() {
	ctx := context.Background()
	p := storage.NewMemory()
	k := storage.Key{GrainType: "bank.Account", GrainKey: "42", State: "balance"}

	data, etag, _ := p.Read(ctx, k)
	fmt.Printf("before: %q exists=%v\n", data, etag != "")

	etag, _ = p.Write(ctx, k, []byte("100"), etag)

	// A writer holding a stale etag (here: "no record") loses.
	_, err := p.Write(ctx, k, []byte("999"), "")
	fmt.Println("stale write conflicts:", errors.Is(err, storage.ErrConflict))

	data, _, _ = p.Read(ctx, k)
	fmt.Printf("after: %q\n", data)

	fmt.Println("clear:", p.Clear(ctx, k, etag))
	// Output:
	// before: "" exists=false
	// stale write conflicts: true
	// after: "100"
	// clear: <nil>
}
