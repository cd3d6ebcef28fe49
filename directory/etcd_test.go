package directory_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

func TestNewEtcdConfig(t *testing.T) {
	cli := newClient(t)
	tests := []struct {
		name    string
		cfg     directory.EtcdConfig
		wantErr string
	}{
		{"ok", directory.EtcdConfig{Prefix: "/g/c/"}, ""},
		{"ok with lease", directory.EtcdConfig{Prefix: "/g/c/", Lease: 1, CacheSize: 10}, ""},
		{"cache disabled", directory.EtcdConfig{Prefix: "/g/c/", CacheSize: -1}, ""},
		{"empty prefix", directory.EtcdConfig{}, "Prefix is empty"},
		{"prefix without slash", directory.EtcdConfig{Prefix: "/g/c"}, "must end with"},
		{"negative lease", directory.EtcdConfig{Prefix: "/g/c/", Lease: -1}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := directory.NewEtcd(cli, tc.cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewEtcd: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("NewEtcd: error %v, want one containing %q", err, tc.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "directory: "):
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
	if _, err := directory.NewEtcd(nil, directory.EtcdConfig{Prefix: "/g/"}); err == nil {
		t.Fatal("NewEtcd(nil client): no error")
	}
}

func TestEtcdRegisterWithoutLease(t *testing.T) {
	d, err := directory.NewEtcd(newClient(t), directory.EtcdConfig{Prefix: testPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Register(testCtx(t), gid(1), entry("a", 1))
	if !errors.Is(err, directory.ErrNoLease) {
		t.Fatalf("Register without lease: %v, want ErrNoLease", err)
	}
}

// TestEtcdKeyLayout checks the key an entry is stored under, its encoding
// and its lease.
func TestEtcdKeyLayout(t *testing.T) {
	ctx := testCtx(t)
	cli := newClient(t)
	lease := grantLease(t, cli)
	prefix := testPrefix(t)
	d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: prefix, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	id := grain.ID{Type: "bank.Account", Key: "alice/1 2"}
	wantKey := prefix + "dir/bank.Account/alice%2F1%202"
	if got := d.Key(id); got != wantKey {
		t.Fatalf("Key(%s) = %q, want %q", id, got, wantKey)
	}
	want := entry("a", 3)
	if _, err := d.Register(ctx, id, want); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, wantKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("key %q: %d kvs, want 1", wantKey, len(resp.Kvs))
	}
	if got := clientv3.LeaseID(resp.Kvs[0].Lease); got != lease {
		t.Errorf("entry's lease = %x, want %x", got, lease)
	}
	var got directory.Entry
	if err := msgpack.Unmarshal(resp.Kvs[0].Value, &got); err != nil || got != want {
		t.Errorf("stored value decodes to %+v, %v; want %+v", got, err, want)
	}
}

// TestEtcdCache counts the KV requests the directory makes: a Lookup after
// Register, or after a Lookup that found the entry, makes none; Invalidate
// forces one; an absent entry is not cached.
func TestEtcdCache(t *testing.T) {
	ctx := testCtx(t)
	var rpcs rpcCounter
	cli := newClient(t, rpcs.option())
	prefix := testPrefix(t)
	d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: prefix, Lease: grantLease(t, newClient(t))})
	if err != nil {
		t.Fatal(err)
	}
	other, err := directory.NewEtcd(newClient(t), directory.EtcdConfig{Prefix: prefix, Lease: grantLease(t, newClient(t))})
	if err != nil {
		t.Fatal(err)
	}
	expect := func(step string, want int64, f func()) {
		t.Helper()
		before := rpcs.load()
		f()
		if got := rpcs.load() - before; got != want {
			t.Fatalf("%s: %d etcd requests, want %d", step, got, want)
		}
	}
	mine, theirs := entry("a", 1), entry("b", 2)
	expect("Register", 1, func() {
		if _, err := d.Register(ctx, gid(1), mine); err != nil {
			t.Fatal(err)
		}
	})
	expect("Lookup after Register", 0, func() {
		if e, ok := mustLookup(t, d, gid(1)); !ok || e != mine {
			t.Fatalf("Lookup = %+v, %v", e, ok)
		}
	})
	if _, err := other.Register(ctx, gid(2), theirs); err != nil {
		t.Fatal(err)
	}
	expect("first Lookup of another silo's entry", 1, func() { mustLookup(t, d, gid(2)) })
	expect("second Lookup", 0, func() { mustLookup(t, d, gid(2)) })
	expect("lost Register", 1, func() {
		if got, err := d.Register(ctx, gid(2), mine); err != nil || got != theirs {
			t.Fatalf("Register = %+v, %v; want %+v", got, err, theirs)
		}
	})
	expect("Lookup after a lost Register", 0, func() { mustLookup(t, d, gid(2)) })
	d.Invalidate(gid(2))
	expect("Lookup after Invalidate", 1, func() {
		if e, ok := mustLookup(t, d, gid(2)); !ok || e != theirs {
			t.Fatalf("Lookup = %+v, %v", e, ok)
		}
	})
	expect("Lookup of an absent id", 1, func() { mustLookup(t, d, gid(3)) })
	expect("Lookup of an absent id again", 1, func() { mustLookup(t, d, gid(3)) })

	// A stale cached entry survives until invalidated: the cache is a hint.
	if err := other.Unregister(ctx, gid(2), theirs); err != nil {
		t.Fatal(err)
	}
	expect("Lookup of a stale entry", 0, func() {
		if e, ok := mustLookup(t, d, gid(2)); !ok || e != theirs {
			t.Fatalf("Lookup = %+v, %v; want the stale cached %+v", e, ok, theirs)
		}
	})
	d.Invalidate(gid(2))
	expect("Lookup after Invalidate of a stale entry", 1, func() {
		if e, ok := mustLookup(t, d, gid(2)); ok {
			t.Fatalf("Lookup = %+v; want absent", e)
		}
	})
}

func TestEtcdCacheBounded(t *testing.T) {
	ctx := testCtx(t)
	cli := newClient(t)
	for _, size := range []int{-1, 1, 10, 100} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			d, err := directory.NewEtcd(cli, directory.EtcdConfig{
				Prefix: testPrefix(t), Lease: grantLease(t, cli), CacheSize: size,
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 300 {
				if _, err := d.Register(ctx, gid(i), entry("a", uint64(i))); err != nil {
					t.Fatal(err)
				}
			}
			if got, limit := d.CacheLen(), max(size, 0); got > limit {
				t.Fatalf("CacheLen = %d, want <= %d", got, limit)
			}
			for i := range 300 {
				if e, ok := mustLookup(t, d, gid(i)); !ok || e != entry("a", uint64(i)) {
					t.Fatalf("Lookup(%s) = %+v, %v", gid(i), e, ok)
				}
			}
		})
	}
}

// TestEtcdUnregisterForeignEncoding: an entry written with a different but
// equivalent encoding (as a silo of another version might) is still
// removed by Unregister of an equal entry.
func TestEtcdUnregisterForeignEncoding(t *testing.T) {
	ctx := testCtx(t)
	cli := newClient(t)
	lease := grantLease(t, cli)
	d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: testPrefix(t), Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	e := entry("a", 9)
	val, err := msgpack.Marshal(map[string]any{"n": e.ActivationID, "i": e.Incarnation, "a": e.Address, "s": e.SiloID})
	if err != nil {
		t.Fatal(err)
	}
	id := gid(1)
	if _, err := cli.Put(ctx, d.Key(id), string(val), clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	if got, ok := mustLookup(t, d, id); !ok || got != e {
		t.Fatalf("Lookup = %+v, %v; want %+v", got, ok, e)
	}
	if err := d.Unregister(ctx, id, entry("a", 10)); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustLookup(t, d, id); !ok {
		t.Fatal("Unregister of another entry removed it")
	}
	if err := d.Unregister(ctx, id, e); err != nil {
		t.Fatal(err)
	}
	if got, ok := mustLookup(t, d, id); ok {
		t.Fatalf("after Unregister: Lookup = %+v; want absent", got)
	}
}

// TestEtcdRegisterAfterLeaseEnded: a silo whose lease is gone cannot
// register; the error says why.
func TestEtcdRegisterAfterLeaseEnded(t *testing.T) {
	ctx := testCtx(t)
	cli := newClient(t)
	lease := grantLease(t, cli)
	d, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: testPrefix(t), Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	_, err = d.Register(ctx, gid(1), entry("a", 1))
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) || !strings.HasPrefix(err.Error(), "directory: register") {
		t.Fatalf("Register with a revoked lease: %v, want a wrapped rpctypes.ErrLeaseNotFound", err)
	}
	if _, ok := mustLookup(t, d, gid(1)); ok {
		t.Fatal("failed Register left an entry")
	}
}
