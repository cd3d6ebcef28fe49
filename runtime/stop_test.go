package runtime_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/runtime/storage"
)

// stuckStorage is a storage whose writes hang, ignoring their context,
// until release closes.
type stuckStorage struct {
	*storage.Memory
	release chan struct{}
}

func (s *stuckStorage) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	<-s.release
	return s.Memory.Write(ctx, k, data, etag)
}

// TestStopIsBoundedWithEtcdAndStorageDown: Stop(context.Background()), as
// the README shows it, returns within DeactivationTimeout + LeaseTTL while
// etcd is unreachable (its process killed) and storage writes hang, and
// says which grains it could not persist. The lease TTL is long enough
// that the silo is not fenced before the deactivations give up.
func TestStopIsBoundedWithEtcdAndStorageDown(t *testing.T) {
	ctx := ctxT(t)
	etcd := runtimetest.StartEtcdProcess(t)
	st := &stuckStorage{Memory: storage.NewMemory(), release: make(chan struct{})}
	defer close(st.release)
	core, logs := observer.New(zap.WarnLevel)
	const ttl, dt = 6 * time.Second, 500 * time.Millisecond
	s, err := runtime.NewSilo(runtime.Config{
		Cluster:             "stop-bounded",
		Etcd:                runtime.EtcdConfig{Endpoints: etcd.Endpoints},
		Storage:             map[string]storage.Provider{runtime.DefaultStorage: st},
		LeaseTTL:            ttl,
		DeactivationTimeout: dt,
		Logger:              zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	registerTestGrains(testgrains.NewObserver())(s)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		if _, err := testgrains.NewCounterRef(s.Client(), fmt.Sprint("stuck-", i)).Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	etcd.Kill()
	begin := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Stop(context.Background()) }()
	const bound = dt + ttl
	select {
	case err = <-done:
	case <-time.After(bound + 1500*time.Millisecond):
		t.Fatalf("Stop(context.Background()) still running %v after it began; the bound is DeactivationTimeout + LeaseTTL = %v",
			time.Since(begin), bound)
	}
	took := time.Since(begin)
	t.Logf("Stop returned after %v (bound %v): %v", took, bound, err)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d activations dropped without writing state", n)) {
		t.Errorf("Stop error %v, want it to say %d activations were dropped without writing state", err, n)
	}
	if got := s.DroppedUnwritten(); got != n {
		t.Errorf("DroppedUnwritten = %d, want %d", got, n)
	}
	for i := range n {
		id := fmt.Sprint("test.Counter/stuck-", i)
		named := logs.FilterMessageSnippet("without writing its state").Filter(func(e observer.LoggedEntry) bool {
			for _, f := range e.Context {
				if f.Key == "grain" && fmt.Sprint(f.Interface) == id {
					return e.Level == zap.ErrorLevel
				}
			}
			return false
		})
		if named.Len() != 1 {
			t.Errorf("no error log names %s as not persisted (%d warnings and errors logged)", id, logs.Len())
		}
	}
}
