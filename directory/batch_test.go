package directory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// concurrently runs f(i) for i in [0, n) from n goroutines released at
// once, and fails the test with the first error.
func concurrently(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			if err := f(i); err != nil {
				errs <- fmt.Errorf("op %d: %w", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestEtcdBatching: concurrent registrations, lookups and unregistrations
// share etcd transactions, and each caller still gets its own answer.
func TestEtcdBatching(t *testing.T) {
	const n = 512
	ctx := testCtx(t)
	var rpcs rpcCounter
	var refused atomic.Int64 // transactions etcd refused (too many operations)
	prefix := testPrefix(t)
	d, err := directory.NewEtcd(newClient(t, rpcs.option(), countRefusals(&refused)), directory.EtcdConfig{Prefix: prefix, Lease: grantLease(t, newClient(t))})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]grain.ID, n)
	for i := range ids {
		ids[i] = grain.ID{Type: "test.Batch", Key: fmt.Sprint(i)}
	}
	// Half the ids registered beforehand by another silo: those
	// registrations lose and must be told the other silo's entry.
	other, err := directory.NewEtcd(newClient(t), directory.EtcdConfig{Prefix: prefix, Lease: grantLease(t, newClient(t))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 2 {
		if _, err := other.Register(ctx, ids[i], entry("b", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	refused.Store(0)
	concurrently(t, n, func(i int) error {
		got, err := d.Register(ctx, ids[i], entry("a", uint64(i)))
		want := entry("a", uint64(i))
		if i%2 == 0 {
			want = entry("b", uint64(i))
		}
		if err == nil && got != want {
			err = fmt.Errorf("Register = %+v, want %+v", got, want)
		}
		return err
	})
	if got := rpcs.load(); got > n/4 {
		t.Errorf("%d concurrent registrations took %d etcd requests, want at most %d", n, got, n/4)
	}
	if got := refused.Load(); got > 0 {
		t.Errorf("etcd refused %d transactions of the default size as too large", got)
	}

	// Lookups of one key by many callers share transactions too.
	var hotRPCs rpcCounter
	hot, err := directory.NewEtcd(newClient(t, hotRPCs.option()), directory.EtcdConfig{Prefix: prefix, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	concurrently(t, n, func(int) error {
		_, ok, err := hot.Lookup(ctx, ids[1])
		if err == nil && !ok {
			err = errors.New("registered entry not found")
		}
		return err
	})
	if got := hotRPCs.load(); got > n/4 {
		t.Errorf("%d concurrent lookups of one key took %d etcd requests, want at most %d", n, got, n/4)
	}

	// Lookups of entries this process never cached.
	var readRPCs rpcCounter
	reader, err := directory.NewEtcd(newClient(t, readRPCs.option()), directory.EtcdConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	concurrently(t, n, func(i int) error {
		want := entry("a", uint64(i))
		if i%2 == 0 {
			want = entry("b", uint64(i))
		}
		e, ok, err := reader.Lookup(ctx, ids[i])
		if err == nil && (!ok || e != want) {
			err = fmt.Errorf("Lookup = %+v, %v; want %+v", e, ok, want)
		}
		return err
	})
	if got := readRPCs.load(); got > n/4 {
		t.Errorf("%d concurrent lookups took %d etcd requests, want at most %d", n, got, n/4)
	}

	// Unregistrations: d's own entries go; the other silo's stay.
	concurrently(t, n, func(i int) error { return d.Unregister(ctx, ids[i], entry("a", uint64(i))) })
	for i, id := range ids {
		reader.Invalidate(id)
		e, ok := mustLookup(t, reader, id)
		if i%2 == 0 && (!ok || e != entry("b", uint64(i))) {
			t.Fatalf("%s: the other silo's entry is %+v, %v after unregistering ours", id, e, ok)
		}
		if i%2 == 1 && ok {
			t.Fatalf("%s: still registered after Unregister: %+v", id, e)
		}
	}
}

// TestEtcdBatchServerLimit: a MaxBatch above the server's --max-txn-ops
// (128 for the embedded etcd) is halved until etcd accepts the batches;
// no caller sees the refusal.
func TestEtcdBatchServerLimit(t *testing.T) {
	const n = 600
	ctx := testCtx(t)
	d, err := directory.NewEtcd(newClient(t, delayTxns(20*time.Millisecond)), directory.EtcdConfig{
		Prefix: testPrefix(t), Lease: grantLease(t, newClient(t)), MaxBatch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	concurrently(t, n, func(i int) error {
		_, err := d.Register(ctx, grain.ID{Type: "test.Batch", Key: fmt.Sprint(i)}, entry("a", uint64(i)))
		return err
	})
}

// TestEtcdBatchAbandoned: callers whose context ends while they wait for a
// slow batch return at once with their context's error, and the batches
// after them still go out: no caller is left waiting for a sender that
// gave up.
func TestEtcdBatchAbandoned(t *testing.T) {
	ctx := testCtx(t)
	d, err := directory.NewEtcd(newClient(t, delayTxns(300*time.Millisecond)), directory.EtcdConfig{
		Prefix: testPrefix(t), Lease: grantLease(t, newClient(t)), MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	id := func(i int) grain.ID { return grain.ID{Type: "test.Batch", Key: fmt.Sprint(i)} }
	for round := range 3 {
		var wg sync.WaitGroup
		// Patient callers keep batches in flight...
		for i := range 8 {
			wg.Go(func() {
				if _, err := d.Register(ctx, id(round*100+i), entry("a", 1)); err != nil {
					t.Error(err)
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		// ...while impatient ones queue behind them and give up.
		for i := range 16 {
			wg.Go(func() {
				short, cancel := context.WithTimeout(ctx, time.Duration(10+i*10)*time.Millisecond)
				defer cancel()
				began := time.Now()
				_, err := d.Register(short, id(round*100+50+i), entry("a", 1))
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("impatient caller: %v, want a deadline error", err)
				}
				if waited := time.Since(began); err != nil && waited > time.Second {
					t.Errorf("impatient caller waited %v past its 10-160 ms deadline", waited)
				}
			})
		}
		wg.Wait()
	}
	// Nothing is stuck: a lone caller still gets through.
	if _, err := d.Register(ctx, id(999), entry("a", 1)); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdBatchCallerDeadline: a caller whose operation is in a slow
// transaction returns at its own deadline, not the transaction's.
func TestEtcdBatchCallerDeadline(t *testing.T) {
	d, err := directory.NewEtcd(newClient(t, delayTxns(2*time.Second)), directory.EtcdConfig{
		Prefix: testPrefix(t), Lease: grantLease(t, newClient(t))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err = d.Register(ctx, grain.ID{Type: "test.Batch", Key: "slow"}, entry("a", 1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register = %v, want a deadline error", err)
	}
	if waited := time.Since(began); waited > time.Second {
		t.Fatalf("a caller with a 100 ms deadline waited %v", waited)
	}
}

// countRefusals is a dial option counting the etcd requests refused with
// "too many operations in txn request".
func countRefusals(n *atomic.Int64) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err != nil && strings.Contains(err.Error(), "too many operations") {
			n.Add(1)
		}
		return err
	})
}

// delayTxns is a dial option that holds every etcd transaction for d
// before sending it.
func delayTxns(d time.Duration) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/Txn") {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// holdTxns is a dial option that holds every etcd transaction until
// release is closed (or its ctx ends), as an unreachable etcd would.
func holdTxns(release <-chan struct{}) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/Txn") {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// TestEtcdBatchQueueIsBounded: while etcd does not answer, operations
// beyond MaxQueue fail at once with ErrOverloaded instead of queueing.
func TestEtcdBatchQueueIsBounded(t *testing.T) {
	const maxQueue = 8
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	d, err := directory.NewEtcd(newClient(t, holdTxns(release)), directory.EtcdConfig{
		Prefix: testPrefix(t), Lease: grantLease(t, newClient(t)), MaxQueue: maxQueue})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	id := func(i int) grain.ID { return grain.ID{Type: "test.Batch", Key: fmt.Sprint(i)} }
	// Two transactions held in etcd, maxQueue operations queued behind.
	var wg sync.WaitGroup
	for i := range 2 + maxQueue {
		wg.Go(func() {
			// A registration may take more than one place in the queue
			// (a stale entry is removed first), so some may be refused.
			if _, err := d.Register(ctx, id(i), entry("a", 1)); err != nil && !errors.Is(err, grain.ErrOverloaded) {
				t.Errorf("queued Register %d: %v", i, err)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		began := time.Now()
		_, err := d.Register(short, id(1000), entry("a", 1))
		cancel()
		if errors.Is(err, grain.ErrOverloaded) {
			if waited := time.Since(began); waited > 50*time.Millisecond {
				t.Fatalf("the overloaded answer took %v", waited)
			}
			t.Log(err)
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Register while etcd holds every transaction: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the batcher's queue grew without bound: no ErrOverloaded")
		}
	}
	unblock()
	wg.Wait()
}
