package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/etcdstore"
	"github.com/granary-rt/granary/runtime/storage/storagetest"
)

// cli is connected to the package's embedded etcd server, which TestMain
// starts before and stops after all tests.
var cli *clientv3.Client

func TestMain(m *testing.M) { os.Exit(etcdembedtest.MainWithClient(m, &cli)) }

func newProvider(t testing.TB, cfg etcdstore.Config) *etcdstore.Provider {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = etcdembedtest.UniquePrefix()
	}
	p, err := etcdstore.New(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Provider {
		return newProvider(t, etcdstore.Config{})
	})
}

func TestConformanceSmallLimit(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Provider {
		return newProvider(t, etcdstore.Config{MaxValueBytes: 1000})
	})
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     etcdstore.Config
		wantErr string // substring; "" for success
		wantMax int
	}{
		{"defaults", etcdstore.Config{Prefix: "/g/"}, "", etcdstore.DefaultMaxValueBytes},
		{"explicit limit", etcdstore.Config{Prefix: "/g/", MaxValueBytes: 4096}, "", 4096},
		{"ceiling", etcdstore.Config{Prefix: "/g/", MaxValueBytes: etcdstore.MaxValueBytesCeiling}, "", etcdstore.MaxValueBytesCeiling},
		{"no prefix", etcdstore.Config{}, "Prefix is required", 0},
		{"prefix without slash", etcdstore.Config{Prefix: "/g"}, `must end in "/"`, 0},
		{"huge prefix", etcdstore.Config{Prefix: strings.Repeat("p", etcdstore.MaxKeyBytes) + "/"}, "Prefix is", 0},
		{"negative limit", etcdstore.Config{Prefix: "/g/", MaxValueBytes: -1}, "must not be negative", 0},
		{"limit over etcd's", etcdstore.Config{Prefix: "/g/", MaxValueBytes: etcdstore.MaxValueBytesCeiling + 1}, "fits in one etcd request", 0},
		{"1.5 MiB", etcdstore.Config{Prefix: "/g/", MaxValueBytes: 3 << 19}, "fits in one etcd request", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := etcdstore.New(cli, tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "etcdstore: ") {
					t.Fatalf("New(%+v) error = %v, want one containing %q", tc.cfg, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := p.MaxValueBytes(); got != tc.wantMax {
				t.Errorf("MaxValueBytes() = %d, want %d", got, tc.wantMax)
			}
		})
	}
	if _, err := etcdstore.New(nil, etcdstore.Config{Prefix: "/g/"}); err == nil {
		t.Error("New(nil client) succeeded")
	}
}

// TestKeyLayout checks the documented key layout against what is really in
// etcd, and that the etag is the key's ModRevision.
func TestKeyLayout(t *testing.T) {
	prefix := etcdembedtest.UniquePrefix()
	p := newProvider(t, etcdstore.Config{Prefix: prefix})
	k := storage.Key{GrainType: "bank/Account", GrainKey: "a b%c", State: "st#1"}
	want := prefix + "state/bank%2FAccount/a%20b%25c/st%231"
	if got := p.EtcdKey(k); got != want {
		t.Fatalf("EtcdKey(%v) = %q, want %q", k, got, want)
	}
	etag, err := p.Write(t.Context(), k, []byte("v"), "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != want || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("etcd holds %v under %s, want exactly %s = v", resp.Kvs, prefix, want)
	}
	if got := fmt.Sprint(resp.Kvs[0].ModRevision); got != etag {
		t.Fatalf("etag %q, ModRevision %s", etag, got)
	}
}

// TestMalformedEtag: etags that no record can have fail with ErrConflict
// without touching etcd. "0" matters most: ModRevision == 0 holds for a
// missing key, so a naive compare would let it create the record.
func TestMalformedEtag(t *testing.T) {
	p := newProvider(t, etcdstore.Config{})
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	for _, etag := range []string{"0", "-1", "+1", "01", "x", "1.0", "99999999999999999999"} {
		_, err := p.Write(ctx, k, []byte("v"), etag)
		if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "malformed etag") {
			t.Errorf("Write with etag %q: %v, want a malformed-etag ErrConflict", etag, err)
		}
		if err := p.Clear(ctx, k, etag); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("Clear with etag %q: %v, want ErrConflict", etag, err)
		}
	}
	if data, etag, err := p.Read(ctx, k); data != nil || etag != "" || err != nil {
		t.Fatalf("Read = (%q, %q, %v), want nothing written", data, etag, err)
	}
}

func TestConflictMessageNamesCurrentEtag(t *testing.T) {
	p := newProvider(t, etcdstore.Config{})
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	e1, err := p.Write(ctx, k, []byte("v1"), "")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := p.Write(ctx, k, []byte("v2"), e1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Write(ctx, k, []byte("v3"), e1)
	want := fmt.Sprintf(`etcdstore: write T/k#s: etag %q given but the current etag is %q: grain: storage etag conflict`, e1, e2)
	if err == nil || err.Error() != want {
		t.Errorf("stale write: %v\nwant %s", err, want)
	}
	err = p.Clear(ctx, storage.Key{GrainType: "T", GrainKey: "other", State: "s"}, e1)
	want = fmt.Sprintf(`etcdstore: clear T/other#s: etag %q given but there is no record: grain: storage etag conflict`, e1)
	if err == nil || err.Error() != want {
		t.Errorf("clear of missing: %v\nwant %s", err, want)
	}
}

// TestLargestValueFits writes a value of MaxValueBytesCeiling under a key of
// MaxKeyBytes: the largest request the provider can send must be one the
// server (with etcd's default request limit) accepts.
func TestLargestValueFits(t *testing.T) {
	prefix := etcdembedtest.UniquePrefix()
	p := newProvider(t, etcdstore.Config{Prefix: prefix, MaxValueBytes: etcdstore.MaxValueBytesCeiling})
	fixed := len(p.EtcdKey(storage.Key{GrainType: "T", State: "s"}))
	k := storage.Key{GrainType: "T", GrainKey: strings.Repeat("k", etcdstore.MaxKeyBytes-fixed), State: "s"}
	if n := len(p.EtcdKey(k)); n != etcdstore.MaxKeyBytes {
		t.Fatalf("test key is %d bytes, want %d", n, etcdstore.MaxKeyBytes)
	}
	v := make([]byte, etcdstore.MaxValueBytesCeiling)
	for i := range v {
		v[i] = byte(i)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	etag, err := p.Write(ctx, k, v, "")
	if err != nil {
		t.Fatalf("Write of %d bytes under a %d-byte key: %v", len(v), etcdstore.MaxKeyBytes, err)
	}
	if _, err := p.Write(ctx, k, v, etag); err != nil {
		t.Fatalf("overwrite: %v", err)
	}

	// One byte more of key is refused locally.
	k.GrainKey += "k"
	_, err = p.Write(ctx, k, []byte("v"), "")
	if !errors.Is(err, storage.ErrTooLarge) || !strings.Contains(err.Error(), "etcd key is") {
		t.Fatalf("Write with a %d-byte key: %v, want ErrTooLarge", len(p.EtcdKey(k)), err)
	}
	if _, _, err := p.Read(ctx, k); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("Read with an oversized key: %v, want ErrTooLarge", err)
	}
}

// TestUnreachable: with no etcd listening, every call fails with a clear
// error by the context's deadline, instead of hanging.
func TestUnreachable(t *testing.T) {
	const endpoint = "127.0.0.1:1" // nothing listens on port 1
	bad, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 200 * time.Millisecond,
		Logger:      zap.NewNop(), // it would warn about every failed attempt
	})
	if err != nil {
		t.Fatalf("clientv3.New dials lazily, but failed: %v", err)
	}
	defer bad.Close()
	p, err := etcdstore.New(bad, etcdstore.Config{Prefix: "/g/"})
	if err != nil {
		t.Fatal(err)
	}
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	const timeout = 300 * time.Millisecond
	for _, op := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"read", func(ctx context.Context) error { _, _, err := p.Read(ctx, k); return err }},
		{"write", func(ctx context.Context) error { _, err := p.Write(ctx, k, []byte("v"), ""); return err }},
		{"clear", func(ctx context.Context) error { return p.Clear(ctx, k, "5") }},
	} {
		t.Run(op.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			err := op.call(ctx)
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("call to an unreachable etcd succeeded")
			}
			if elapsed > timeout+time.Second {
				t.Errorf("failed after %v; the context allowed %v", elapsed, timeout)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "etcdstore: "+op.name) || !strings.Contains(msg, endpoint) || !strings.Contains(msg, "connection ") {
				t.Errorf("error %q should say etcdstore, the operation, the endpoint %s and the connection state", msg, endpoint)
			}
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

func BenchmarkEtcd(b *testing.B) {
	storagetest.Bench(b, func(b *testing.B) storage.Provider {
		return newProvider(b, etcdstore.Config{})
	})
}
