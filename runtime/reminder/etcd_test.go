package reminder_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/etcdembed/etcdembedtest"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/reminder/remindertest"
)

func newEtcd(t testing.TB, cfg reminder.EtcdConfig) *reminder.Etcd {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = etcdembedtest.UniquePrefix()
	}
	tb, err := reminder.NewEtcd(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestEtcdConformance(t *testing.T) {
	remindertest.Run(t, func(t *testing.T) reminder.Table {
		return newEtcd(t, reminder.EtcdConfig{})
	})
}

// TestEtcdConformanceSmallBatches runs the suite with pages and
// transactions so small that every list and every multi-bucket save spans
// many of them.
func TestEtcdConformanceSmallBatches(t *testing.T) {
	remindertest.Run(t, func(t *testing.T) reminder.Table {
		return newEtcd(t, reminder.EtcdConfig{PageSize: 7, MaxTxnOps: 12})
	})
}

func TestEtcdConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     reminder.EtcdConfig
		wantErr string // substring; "" for success
	}{
		{"defaults", reminder.EtcdConfig{Prefix: "/g/"}, ""},
		{"explicit", reminder.EtcdConfig{Prefix: "/g/", PageSize: 10, MaxTxnOps: 64}, ""},
		{"no prefix", reminder.EtcdConfig{}, "Prefix is required"},
		{"prefix without slash", reminder.EtcdConfig{Prefix: "/g"}, `must end in "/"`},
		{"huge prefix", reminder.EtcdConfig{Prefix: strings.Repeat("p", reminder.MaxKeyBytes) + "/"}, "Prefix is"},
		{"negative page size", reminder.EtcdConfig{Prefix: "/g/", PageSize: -1}, "PageSize is -1"},
		{"negative txn ops", reminder.EtcdConfig{Prefix: "/g/", MaxTxnOps: -1}, "MaxTxnOps is -1"},
		{"too few txn ops", reminder.EtcdConfig{Prefix: "/g/", MaxTxnOps: 2}, "at least 3"},
		{"fewest txn ops", reminder.EtcdConfig{Prefix: "/g/", MaxTxnOps: 3}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reminder.NewEtcd(cli, tc.cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewEtcd(%+v): %v", tc.cfg, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "reminder: ")):
				t.Fatalf("NewEtcd(%+v) error = %v, want one containing %q", tc.cfg, err, tc.wantErr)
			}
		})
	}
	if _, err := reminder.NewEtcd(nil, reminder.EtcdConfig{Prefix: "/g/"}); err == nil {
		t.Error("NewEtcd(nil client) succeeded")
	}
}

// TestEtcdKeyLayout checks the documented key layout against what is really
// in etcd, that the etag is the key's ModRevision, and the progress format.
func TestEtcdKeyLayout(t *testing.T) {
	ctx := t.Context()
	prefix := etcdembedtest.UniquePrefix()
	tb := newEtcd(t, reminder.EtcdConfig{Prefix: prefix})
	id := grain.ID{Type: "bank/Account", Key: "a b%c"}
	b := reminder.BucketOf(reminder.Hash(id))
	want := fmt.Sprintf("%sreminders/%02x/bank%%2FAccount/a%%20b%%25c/daily%%2Finterest", prefix, b)
	if got := tb.Key(id, "daily/interest"); got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
	etag, err := tb.Upsert(ctx, reminder.Entry{Grain: id, Name: "daily/interest", Start: time.Unix(1e9, 0), Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	through := time.Date(2026, 5, 6, 7, 8, 9, 10, time.FixedZone("CEST", 2*3600))
	if err := tb.SaveProgress(ctx, []int{0, 0xab}, through); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
		if string(kv.Key) == want && fmt.Sprint(kv.ModRevision) != etag {
			t.Errorf("etag %q, ModRevision %d", etag, kv.ModRevision)
		}
	}
	progress := "2026-05-06T05:08:09.000000010Z"
	wantKeys := []string{prefix + "reminder-progress/00", prefix + "reminder-progress/ab", want}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, wantKeys) {
		t.Fatalf("etcd holds keys %q under %s, want %q", keys, prefix, wantKeys)
	}
	if got[wantKeys[0]] != progress || got[wantKeys[1]] != progress {
		t.Errorf("progress values %q, %q, want %q", got[wantKeys[0]], got[wantKeys[1]], progress)
	}
	if tb.ProgressKey(0xab) != wantKeys[1] {
		t.Errorf("ProgressKey(0xab) = %q, want %q", tb.ProgressKey(0xab), wantKeys[1])
	}
}

// TestEtcdMalformedEtag: etags that no reminder can have fail with
// ErrConflict without touching etcd. "0" matters most: ModRevision == 0
// holds for a missing key, so a naive compare would let it create the
// reminder.
func TestEtcdMalformedEtag(t *testing.T) {
	ctx := t.Context()
	tb := newEtcd(t, reminder.EtcdConfig{})
	e := reminder.Entry{Grain: grain.ID{Type: "T", Key: "k"}, Name: "r", Start: time.Unix(1e9, 0), Period: time.Minute}
	for _, etag := range []string{"0", "-1", "+1", "01", "x", "1.0", "99999999999999999999"} {
		e.Etag = etag
		_, err := tb.Upsert(ctx, e)
		if !errors.Is(err, reminder.ErrConflict) || !strings.Contains(err.Error(), "malformed etag") {
			t.Errorf("Upsert with etag %q: %v, want a malformed-etag ErrConflict", etag, err)
		}
		if _, err := tb.Remove(ctx, e.Grain, e.Name, etag); !errors.Is(err, reminder.ErrConflict) {
			t.Errorf("Remove with etag %q: %v, want ErrConflict", etag, err)
		}
	}
	if _, ok, err := tb.Get(ctx, e.Grain, e.Name); ok || err != nil {
		t.Fatalf("Get = (%v, %v), want nothing written", ok, err)
	}
}

func TestEtcdConflictMessageNamesCurrentEtag(t *testing.T) {
	ctx := t.Context()
	tb := newEtcd(t, reminder.EtcdConfig{})
	e := reminder.Entry{Grain: grain.ID{Type: "T", Key: "k"}, Name: "r", Start: time.Unix(1e9, 0), Period: time.Minute}
	e1, err := tb.Upsert(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := tb.Upsert(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	e.Etag = e1
	_, err = tb.Upsert(ctx, e)
	want := fmt.Sprintf(`reminder: upsert T/k#r: etag %q given but the current etag is %q: grain: storage etag conflict`, e1, e2)
	if err == nil || err.Error() != want {
		t.Errorf("stale upsert: %v\nwant %s", err, want)
	}
	_, err = tb.Remove(ctx, e.Grain, "other", e1)
	want = fmt.Sprintf(`reminder: remove T/k#other: etag %q given but there is no reminder: grain: storage etag conflict`, e1)
	if err == nil || err.Error() != want {
		t.Errorf("remove of missing: %v\nwant %s", err, want)
	}
}

// TestEtcdListBucketLarge lists 20,000 reminders of one bucket: twenty
// pages of the default size.
func TestEtcdListBucketLarge(t *testing.T) {
	const n = 20_000
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tb := newEtcd(t, reminder.EtcdConfig{})
	id := grain.ID{Type: "T", Key: "big"}
	start := time.Now()
	if err := remindertest.Fill(ctx, tb, id, n); err != nil {
		t.Fatal(err)
	}
	t.Logf("upserted %d reminders in %v", n, time.Since(start).Round(time.Millisecond))

	// A neighbour in the same bucket, and one in the next, must neither be
	// lost nor leak in.
	b := reminder.BucketOf(reminder.Hash(id))
	start = time.Now()
	es, err := tb.ListBucket(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ListBucket of %d reminders took %v", len(es), time.Since(start).Round(time.Millisecond))
	if len(es) != n {
		t.Fatalf("ListBucket(%d) returned %d reminders, want %d", b, len(es), n)
	}
	seen := make(map[string]bool, n)
	for _, e := range es {
		if e.Grain != id || seen[e.Name] || e.Etag == "" {
			t.Fatalf("ListBucket(%d) returned %+v: wrong grain, no etag or a duplicate", b, e)
		}
		seen[e.Name] = true
	}
	for i := range n {
		if name := fmt.Sprintf("r%06d", i); !seen[name] {
			t.Fatalf("ListBucket(%d) is missing %s", b, name)
		}
	}

	gs, err := tb.ListGrain(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != n || !slices.IsSortedFunc(gs, func(a, b reminder.Entry) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("ListGrain returned %d reminders (sorted: %v), want %d sorted", len(gs), slices.IsSortedFunc(gs, func(a, b reminder.Entry) int { return strings.Compare(a.Name, b.Name) }), n)
	}
}

// TestEtcdTxnLimit pins how SaveProgress counts against etcd's
// --max-txn-ops (128 by default): a table told the server allows one more
// operation than it does fails to save all buckets; the default
// configuration, and a limit of 3 (one bucket per transaction), succeed.
func TestEtcdTxnLimit(t *testing.T) {
	all := make([]int, reminder.Buckets)
	for i := range all {
		all[i] = i
	}
	through := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := newEtcd(t, reminder.EtcdConfig{MaxTxnOps: reminder.DefaultMaxTxnOps + 1})
	err := bad.SaveProgress(t.Context(), all, through)
	if err == nil || !strings.Contains(err.Error(), "too many operations") {
		t.Fatalf("SaveProgress of %d buckets with MaxTxnOps one over the server's: %v, want etcd's too-many-operations error", len(all), err)
	}
	for _, ops := range []int{0, 3} {
		good := newEtcd(t, reminder.EtcdConfig{MaxTxnOps: ops})
		if err := good.SaveProgress(t.Context(), all, through); err != nil {
			t.Fatalf("MaxTxnOps %d: %v", ops, err)
		}
		for _, b := range []int{0, 125, 126, 255} {
			if p, err := good.LoadProgress(t.Context(), b); err != nil || !p.Equal(through) {
				t.Fatalf("MaxTxnOps %d: LoadProgress(%d) = (%v, %v), want %v", ops, b, p, err, through)
			}
		}
	}
}

// TestEtcdCorruptValue: a value the table cannot decode fails the read
// with an error naming the key, instead of panicking or returning garbage.
func TestEtcdCorruptValue(t *testing.T) {
	ctx := t.Context()
	tb := newEtcd(t, reminder.EtcdConfig{})
	id := grain.ID{Type: "T", Key: "k"}
	key := tb.Key(id, "r")
	if _, err := cli.Put(ctx, key, "\xc1 not msgpack"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, tb.ProgressKey(3), "yesterday"); err != nil {
		t.Fatal(err)
	}
	check := func(op string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "reminder: ") {
			t.Errorf("%s of a corrupt value: %v, want an error", op, err)
		}
	}
	_, _, err := tb.Get(ctx, id, "r")
	check("Get", err)
	if err != nil && !strings.Contains(err.Error(), key) {
		t.Errorf("Get error %q does not name the key %s", err, key)
	}
	_, err = tb.ListGrain(ctx, id)
	check("ListGrain", err)
	_, err = tb.ListBucket(ctx, reminder.BucketOf(reminder.Hash(id)))
	check("ListBucket", err)
	_, err = tb.LoadProgress(ctx, 3)
	check("LoadProgress", err)
}

// TestEtcdUnreachable: with no etcd listening, calls fail by the context's
// deadline with an error naming the endpoint, instead of hanging.
func TestEtcdUnreachable(t *testing.T) {
	const endpoint = "127.0.0.1:1" // nothing listens on port 1
	bad, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 200 * time.Millisecond,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New dials lazily, but failed: %v", err)
	}
	defer bad.Close()
	tb, err := reminder.NewEtcd(bad, reminder.EtcdConfig{Prefix: "/g/"})
	if err != nil {
		t.Fatal(err)
	}
	e := reminder.Entry{Grain: grain.ID{Type: "T", Key: "k"}, Name: "r", Start: time.Unix(1e9, 0), Period: time.Minute}
	for _, op := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"upsert", func(ctx context.Context) error { _, err := tb.Upsert(ctx, e); return err }},
		{"list", func(ctx context.Context) error { _, err := tb.ListBucket(ctx, 1); return err }},
		{"save progress", func(ctx context.Context) error { return tb.SaveProgress(ctx, []int{1}, time.Now()) }},
	} {
		t.Run(op.name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			err := op.call(ctx)
			if elapsed := time.Since(start); elapsed > timeout+time.Second {
				t.Errorf("failed after %v; the context allowed %v", elapsed, timeout)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "reminder: "+op.name) || !strings.Contains(msg, endpoint) {
				t.Errorf("error %q should name the operation and the endpoint %s", msg, endpoint)
			}
		})
	}
}

func BenchmarkEtcd(b *testing.B) {
	remindertest.Bench(b, func(b *testing.B) reminder.Table {
		return newEtcd(b, reminder.EtcdConfig{})
	})
}
