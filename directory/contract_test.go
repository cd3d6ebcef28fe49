package directory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// env is one test's view of a directory backend: silos that register
// entries, each with its own lease where the backend has leases, and fresh
// readers.
type env interface {
	// silo returns a directory acting for siloID.
	silo(siloID string) directory.Directory
	// kill makes siloID's entries vanish, as the expiry of its lease does.
	kill(siloID string)
	// reader returns a new directory with an empty cache.
	reader() directory.Directory
}

var backends = []struct {
	name string
	new  func(t *testing.T) env
}{
	{"memory", func(t *testing.T) env { return &memEnv{m: directory.NewMemory()} }},
	{"etcd", newEtcdEnv},
}

type memEnv struct{ m *directory.Memory }

func (e *memEnv) silo(string) directory.Directory { return e.m }
func (e *memEnv) kill(siloID string)              { e.m.ForgetSilo(siloID) }
func (e *memEnv) reader() directory.Directory     { return e.m }

type etcdEnv struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	leases map[string]etcdSilo
}

type etcdSilo struct {
	dir   *directory.Etcd
	lease clientv3.LeaseID
}

func newEtcdEnv(t *testing.T) env {
	return &etcdEnv{t: t, prefix: testPrefix(t), leases: map[string]etcdSilo{}}
}

func (e *etcdEnv) silo(siloID string) directory.Directory {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.leases[siloID]; ok {
		return s.dir
	}
	cli := newClient(e.t)
	lease := grantLease(e.t, cli)
	d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: e.prefix, Lease: lease})
	if err != nil {
		e.t.Fatal(err)
	}
	e.leases[siloID] = etcdSilo{dir: d, lease: lease}
	return d
}

func (e *etcdEnv) kill(siloID string) {
	e.mu.Lock()
	s := e.leases[siloID]
	e.mu.Unlock()
	cli := newClient(e.t)
	if _, err := cli.Revoke(testCtx(e.t), s.lease); err != nil {
		e.t.Fatal(err)
	}
}

func (e *etcdEnv) reader() directory.Directory {
	d, err := directory.NewEtcd(newClient(e.t), directory.EtcdConfig{Prefix: e.prefix})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func entry(silo string, act uint64) directory.Entry {
	return directory.Entry{SiloID: silo, Address: silo + ":7000", Incarnation: 7, ActivationID: act}
}

func gid(i int) grain.ID { return grain.ID{Type: "test.Counter", Key: fmt.Sprintf("k%d", i)} }

func mustLookup(t *testing.T, d directory.Directory, id grain.ID) (directory.Entry, bool) {
	t.Helper()
	e, ok, err := d.Lookup(testCtx(t), id)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", id, err)
	}
	return e, ok
}

func TestContract(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, env env)
	}{
		{"RegisterRace", testRegisterRace},
		{"LookupAbsent", testLookupAbsent},
		{"UnregisterConditional", testUnregisterConditional},
		{"OwnerDeath", testOwnerDeath},
		{"Reregister", testReregister},
		{"InvalidArguments", testInvalidArguments},
		{"CanceledContext", testCanceledContext},
	}
	for _, b := range backends {
		t.Run("backend="+b.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, b.new(t)) })
			}
		})
	}
}

// testRegisterRace races 2 silos x 16 goroutines, each registering the same
// 200 ids with its own entry: exactly one wins each id and every racer is
// told the same winner.
func testRegisterRace(t *testing.T, env env) {
	const silos, goroutines, ids = 2, 16, 200
	ctx := testCtx(t)
	type result struct {
		mine, got directory.Entry
	}
	results := make([][]result, ids) // per id, one result per racer
	for i := range results {
		results[i] = make([]result, silos*goroutines)
	}
	dirs := make([]directory.Directory, silos)
	for s := range dirs {
		dirs[s] = env.silo(fmt.Sprintf("silo-%d", s))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, silos*goroutines)
	for s := range silos {
		for g := range goroutines {
			wg.Go(func() {
				<-start
				r := s*goroutines + g
				mine := entry(fmt.Sprintf("silo-%d", s), uint64(r))
				for i := range ids {
					got, err := dirs[s].Register(ctx, gid(i), mine)
					if err != nil {
						errs <- err
						return
					}
					results[i][r] = result{mine: mine, got: got}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	reader := env.reader()
	for i, rs := range results {
		winners := 0
		for _, r := range rs {
			if r.got == r.mine {
				winners++
			}
			if r.got != rs[0].got {
				t.Fatalf("id %s: racers were told different winners: %+v and %+v", gid(i), r.got, rs[0].got)
			}
		}
		if winners != 1 {
			t.Fatalf("id %s: %d racers won, want exactly 1", gid(i), winners)
		}
		if e, ok := mustLookup(t, reader, gid(i)); !ok || e != rs[0].got {
			t.Fatalf("fresh Lookup(%s) = %+v, %v; want the winner %+v", gid(i), e, ok, rs[0].got)
		}
	}
}

func testLookupAbsent(t *testing.T, env env) {
	d := env.silo("a")
	if e, ok := mustLookup(t, d, gid(1)); ok {
		t.Fatalf("Lookup of an unregistered id = %+v, true; want absent", e)
	}
	// An absent entry is not remembered: a registration that follows is
	// seen.
	want := entry("b", 1)
	if _, err := env.silo("b").Register(testCtx(t), gid(1), want); err != nil {
		t.Fatal(err)
	}
	if e, ok := mustLookup(t, d, gid(1)); !ok || e != want {
		t.Fatalf("Lookup after Register = %+v, %v; want %+v", e, ok, want)
	}
}

func testUnregisterConditional(t *testing.T, env env) {
	ctx := testCtx(t)
	a, b := env.silo("a"), env.silo("b")
	id := gid(1)
	win := entry("a", 1)
	if got, err := a.Register(ctx, id, win); err != nil || got != win {
		t.Fatalf("Register = %+v, %v; want %+v", got, err, win)
	}
	lose := entry("b", 2)
	if got, err := b.Register(ctx, id, lose); err != nil || got != win {
		t.Fatalf("losing Register = %+v, %v; want the winner %+v", got, err, win)
	}
	// A non-winning entry, from either silo, does not remove the winner.
	for _, d := range []directory.Directory{a, b} {
		if err := d.Unregister(ctx, id, lose); err != nil {
			t.Fatalf("Unregister(non-winner): %v", err)
		}
		if e, ok := mustLookup(t, env.reader(), id); !ok || e != win {
			t.Fatalf("after Unregister(non-winner): Lookup = %+v, %v; want %+v", e, ok, win)
		}
	}
	if err := a.Unregister(ctx, id, win); err != nil {
		t.Fatalf("Unregister(winner): %v", err)
	}
	if e, ok := mustLookup(t, env.reader(), id); ok {
		t.Fatalf("after Unregister(winner): Lookup = %+v, true; want absent", e)
	}
	// The unregistering directory dropped its own cached entry.
	if e, ok := mustLookup(t, a, id); ok {
		t.Fatalf("after Unregister(winner): Lookup on the same directory = %+v, true; want absent", e)
	}
	// Unregistering what is gone is not an error.
	if err := a.Unregister(ctx, id, win); err != nil {
		t.Fatalf("Unregister of a gone entry: %v", err)
	}
}

func testOwnerDeath(t *testing.T, env env) {
	ctx := testCtx(t)
	a, b := env.silo("a"), env.silo("b")
	const n = 20
	for i := range n {
		if _, err := a.Register(ctx, gid(i), entry("a", uint64(i))); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Register(ctx, gid(n+i), entry("b", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	r := env.reader()
	for i := range 2 * n {
		if _, ok := mustLookup(t, r, gid(i)); !ok {
			t.Fatalf("Lookup(%s) before the owner died: absent", gid(i))
		}
	}
	env.kill("a")
	for i := range 2 * n {
		r.Invalidate(gid(i))
		e, ok := mustLookup(t, r, gid(i))
		if i < n && ok {
			t.Fatalf("Lookup(%s) after its owner's lease ended = %+v; want absent", gid(i), e)
		}
		if i >= n && (!ok || e.SiloID != "b") {
			t.Fatalf("Lookup(%s) of a live silo's entry = %+v, %v; want b's", gid(i), e, ok)
		}
	}
}

func testReregister(t *testing.T, env env) {
	ctx := testCtx(t)
	a, b := env.silo("a"), env.silo("b")
	id := gid(1)
	first, second := entry("a", 1), entry("b", 2)
	if _, err := a.Register(ctx, id, first); err != nil {
		t.Fatal(err)
	}
	if err := a.Unregister(ctx, id, first); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Register(ctx, id, second); err != nil || got != second {
		t.Fatalf("Register after Unregister = %+v, %v; want %+v", got, err, second)
	}
	// Register refreshes a stale cached entry with the winner.
	if got, err := a.Register(ctx, id, first); err != nil || got != second {
		t.Fatalf("Register = %+v, %v; want the winner %+v", got, err, second)
	}
	if e, ok := mustLookup(t, a, id); !ok || e != second {
		t.Fatalf("Lookup = %+v, %v; want %+v", e, ok, second)
	}
}

func testInvalidArguments(t *testing.T, env env) {
	ctx := testCtx(t)
	d := env.silo("a")
	if _, err := d.Register(ctx, grain.ID{Key: "k"}, entry("a", 1)); err == nil {
		t.Error("Register with an id without type: no error")
	}
	if _, err := d.Register(ctx, gid(1), directory.Entry{}); err == nil {
		t.Error("Register of a zero entry: no error")
	}
	// Keys may hold any byte, slashes included.
	odd := grain.ID{Type: "pkg.T", Key: "a/b c%2F?é"}
	want := entry("a", 1)
	if got, err := d.Register(ctx, odd, want); err != nil || got != want {
		t.Fatalf("Register(%q) = %+v, %v", odd, got, err)
	}
	if e, ok := mustLookup(t, env.reader(), odd); !ok || e != want {
		t.Fatalf("Lookup(%q) = %+v, %v; want %+v", odd, e, ok, want)
	}
	if e, ok := mustLookup(t, env.reader(), grain.ID{Type: "pkg.T", Key: "a"}); ok {
		t.Fatalf("Lookup of a key prefix = %+v; want absent", e)
	}
}

func testCanceledContext(t *testing.T, env env) {
	d := env.silo("a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Register(ctx, gid(1), entry("a", 1)); err == nil {
		t.Error("Register with a canceled context: no error")
	}
	if _, _, err := d.Lookup(ctx, gid(2)); err == nil {
		t.Error("Lookup with a canceled context: no error")
	}
	if err := d.Unregister(ctx, gid(1), entry("a", 1)); err == nil {
		t.Error("Unregister with a canceled context: no error")
	}
}
