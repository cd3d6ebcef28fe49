package runtime_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
)

// landingStorage applies every write while landing is set and then fails
// it anyway, as a write whose reply was lost (etcd "Unavailable ...
// connection reset", a timeout after commit): its outcome is unknown to
// the writer.
type landingStorage struct {
	*storage.Memory
	landing atomic.Bool
}

func (l *landingStorage) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	etag, err := l.Memory.Write(ctx, k, data, etag)
	if err == nil && l.landing.Load() {
		return "", errors.New("landing storage: connection reset after the write was applied")
	}
	return etag, err
}

// TestFailedWriteThroughIsNotVisible: a write-through that fails fails
// its call, and no later call sees the value that was not written: the
// activation is torn down and the next call reloads from storage.
func TestFailedWriteThroughIsNotVisible(t *testing.T) {
	st := &flakyStorage{Memory: storage.NewMemory()}
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st}})
	ctx := ctxT(t)
	c := testgrains.NewClockRef(f.Client(), "through")
	if err := c.SetThrough(ctx, 7); err != nil {
		t.Fatal(err)
	}
	st.failing.Store(true)
	err := c.SetThrough(ctx, 9)
	if !errors.Is(err, errStorageDown) {
		t.Fatalf("SetThrough with storage down: %v, want the storage error", err)
	}
	// The provider did not say the write was refused: it may have landed.
	checkOutcome(t, "failed write-through", err, grain.ErrOutcomeUnknown, grain.OutcomeUnknown)
	st.failing.Store(false)
	got, err := c.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != 7 {
		t.Fatalf("after a failed write-through of 9, the next call sees %d; want 7, the value storage holds", got.Value)
	}
	// A later successful write persists only what its own call set.
	if err := c.SetLazy(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := f.obs.Activations(c.ID()); n != 2 {
		t.Errorf("activations = %d, want 2: the one whose write failed is torn down", n)
	}
}

// TestFailedWriteOfUnknownOutcomeIsNotHidden: an explicit Write that
// returns an error may still have landed. The grain (like samples/bank)
// restores its old value on the error, which would hide what storage now
// holds and leave a stale etag; tearing the activation down makes the
// next call see storage's value.
func TestFailedWriteOfUnknownOutcomeIsNotHidden(t *testing.T) {
	st := &landingStorage{Memory: storage.NewMemory()}
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st}})
	ctx := ctxT(t)
	c := testgrains.NewCounterRef(f.Client(), "landed")
	if n, err := c.AddDurable(ctx, 1); err != nil || n != 1 {
		t.Fatalf("AddDurable = %d, %v", n, err)
	}
	st.landing.Store(true)
	_, err := c.AddDurable(ctx, 4)
	if err == nil {
		t.Fatal("AddDurable succeeded although its write returned an error")
	}
	// Storage did not say whether it landed: neither may the error.
	checkOutcome(t, "write whose outcome storage did not report", err, grain.ErrOutcomeUnknown, grain.OutcomeUnknown)
	st.landing.Store(false)
	n, err := c.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("after a write that failed but landed, Get = %d; want 5, what storage holds", n)
	}
	if n, err := c.AddDurable(ctx, 1); err != nil || n != 6 {
		t.Fatalf("next AddDurable = %d, %v; want 6", n, err)
	}
}

// TestTooLargeStateIsNotRetriedForever: a state the provider can never
// accept fails the write-through call; on deactivation and at Stop it is
// dropped (logged, counted) instead of keeping the activation for ever.
func TestTooLargeStateIsNotRetriedForever(t *testing.T) {
	st := storage.NewMemory(storage.WithMaxValueBytes(5))
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st},
		DeactivationTimeout: 5 * time.Second})
	ctx := ctxT(t)
	s := f.Silos[0]
	c := testgrains.NewCounterRef(f.Client(), "huge")
	if n, err := c.Add(ctx, 1<<40); err != nil || n != 1<<40 {
		t.Fatalf("Add = %d, %v", n, err)
	}
	_, err := c.AddDurable(ctx, 1)
	if !errors.Is(err, grain.ErrTooLarge) {
		t.Fatalf("AddDurable of a too large state: %v, want ErrTooLarge", err)
	}
	// It ran, and storage surely refused the state: ran and failed.
	checkOutcome(t, "too large write-through", err, grain.ErrTooLarge, grain.OutcomeFailed)
	if _, err := c.Add(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	if err := c.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 3*time.Second, func() bool { return s.ActivationCount() == 0 },
		"an activation whose state can never be written is kept for ever")
	if n := s.DroppedUnwritten(); n != 1 {
		t.Errorf("DroppedUnwritten = %d, want 1", n)
	}
	if n, err := c.Get(ctx); err != nil || n != 0 {
		t.Fatalf("Get after the drop = %d, %v; want 0 (nothing was ever written)", n, err)
	}
	if _, err := c.Add(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(begin); d >= 5*time.Second {
		t.Errorf("Stop took %v, its whole deactivation time, with a state that can never be written; it must not retry it", d)
	}
	if n := s.DroppedUnwritten(); n != 2 {
		t.Errorf("DroppedUnwritten after Stop = %d, want 2", n)
	}
}

// TestTooLargeWriteBehindIsNotRetriedForever: a write-behind state the
// provider can never accept is not flushed again and again: the
// activation is torn down, its loss logged and counted.
func TestTooLargeWriteBehindIsNotRetriedForever(t *testing.T) {
	st := storage.NewMemory(storage.WithMaxValueBytes(5))
	f := start(t, 1, runtime.Config{Storage: map[string]storage.Provider{runtime.DefaultStorage: st}})
	ctx := ctxT(t)
	s := f.Silos[0]
	c := testgrains.NewClockRef(f.Client(), "huge-behind")
	if err := c.SetBehind(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	runtimetest.Eventually(t, 3*time.Second, func() bool { return s.ActivationCount() == 0 },
		"an activation whose write-behind state can never be written is kept, its flush retried")
	if n := s.DroppedUnwritten(); n != 1 {
		t.Errorf("DroppedUnwritten = %d, want 1", n)
	}
}
