package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/reminder/remindertest"
	"github.com/granary-rt/granary/runtime/storage/postgres"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

var clusters atomic.Int64

// uniqueCluster returns a cluster name no other test or subtest uses.
func uniqueCluster() string { return fmt.Sprintf("cluster-%d", clusters.Add(1)) }

func newReminderTable(tb testing.TB, cfg postgres.ReminderConfig) *postgres.ReminderTable {
	tb.Helper()
	if cfg.Cluster == "" {
		cfg.Cluster = uniqueCluster()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t, err := postgres.NewReminderTable(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(t.Close)
	return t
}

// TestReminderConformance: every subtest gets a cluster of its own in the
// same tables, so the suite also checks that clusters do not see each
// other's reminders or progress.
func TestReminderConformance(t *testing.T) {
	pool := newPool(t, pgtest.DSN(t), nil)
	remindertest.Run(t, func(t *testing.T) reminder.Table {
		return newReminderTable(t, postgres.ReminderConfig{Pool: pool})
	})
}

// TestReminderConformanceOwnTables: every subtest gets tables of its own,
// through a DSN.
func TestReminderConformanceOwnTables(t *testing.T) {
	dsn := pgtest.DSN(t)
	remindertest.Run(t, func(t *testing.T) reminder.Table {
		return newReminderTable(t, postgres.ReminderConfig{DSN: dsn, Cluster: "dev", Table: "reminders_" + uniqueTable()})
	})
}

func TestReminderConfig(t *testing.T) {
	dsn := pgtest.DSN(t)
	for _, tc := range []struct {
		name    string
		cfg     postgres.ReminderConfig
		wantErr string // substring; "" for success
	}{
		{"defaults", postgres.ReminderConfig{DSN: dsn, Cluster: "dev"}, ""},
		{"explicit table", postgres.ReminderConfig{DSN: dsn, Cluster: "dev", Table: "my_reminders"}, ""},
		{"unicode cluster", postgres.ReminderConfig{DSN: dsn, Cluster: "prod/eu-west ✓"}, ""},
		{"no cluster", postgres.ReminderConfig{DSN: dsn}, "Cluster is required"},
		{"control character in cluster", postgres.ReminderConfig{DSN: dsn, Cluster: "a\x00b"}, "without control characters"},
		{"invalid UTF-8 in cluster", postgres.ReminderConfig{DSN: dsn, Cluster: "a\xffb"}, "must be UTF-8"},
		{"long cluster", postgres.ReminderConfig{DSN: dsn, Cluster: strings.Repeat("c", 257)}, "at most 256"},
		{"neither DSN nor pool", postgres.ReminderConfig{Cluster: "dev"}, "ReminderConfig.DSN or ReminderConfig.Pool is required"},
		{"both DSN and pool", postgres.ReminderConfig{Cluster: "dev", DSN: dsn, Pool: &pgxpool.Pool{}}, "not both"},
		{"bad table", postgres.ReminderConfig{DSN: dsn, Cluster: "dev", Table: "Reminders"}, "not a plain SQL identifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, err := postgres.NewReminderTable(t.Context(), tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewReminderTable: %v", err)
				}
				tbl.Close()
				return
			}
			if err == nil {
				tbl.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "postgres: ") {
				t.Fatalf("NewReminderTable(%+v) error = %v, want one containing %q", tc.cfg, err, tc.wantErr)
			}
		})
	}
}

// TestReminderClusters: two clusters in one pair of tables, with the same
// reminders and buckets, are independent.
func TestReminderClusters(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := newReminderTable(t, postgres.ReminderConfig{DSN: dsn, Cluster: "a"})
	b := newReminderTable(t, postgres.ReminderConfig{DSN: dsn, Cluster: "b"})
	ctx := t.Context()
	id := grain.ID{Type: "T", Key: "k"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	ea, err := a.Upsert(ctx, reminder.Entry{Grain: id, Name: "r", Start: start, Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Get(ctx, id, "r"); ok || err != nil {
		t.Fatalf("cluster b sees cluster a's reminder: ok=%v, %v", ok, err)
	}
	if _, err := b.Upsert(ctx, reminder.Entry{Grain: id, Name: "r", Start: start, Period: time.Minute, Etag: ea}); !errors.Is(err, reminder.ErrConflict) {
		t.Fatalf("cluster b upserted with cluster a's etag: %v, want ErrConflict", err)
	}
	if _, err := b.Upsert(ctx, reminder.Entry{Grain: id, Name: "r", Start: start, Period: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if removed, err := b.Remove(ctx, id, "r", ""); !removed || err != nil {
		t.Fatalf("b.Remove = (%v, %v)", removed, err)
	}
	e, ok, err := a.Get(ctx, id, "r")
	if !ok || err != nil || e.Period != time.Minute || e.Etag != ea {
		t.Fatalf("a.Get after b's upsert and remove = (%+v, %v, %v), want a's reminder unchanged", e, ok, err)
	}
	bucket := reminder.BucketOf(reminder.Hash(id))
	if es, err := b.ListBucket(ctx, bucket); len(es) != 0 || err != nil {
		t.Fatalf("b.ListBucket(%d) = (%v, %v), want nothing", bucket, es, err)
	}
	if es, err := a.ListBucket(ctx, bucket); len(es) != 1 || err != nil {
		t.Fatalf("a.ListBucket(%d) = (%v, %v), want a's reminder", bucket, es, err)
	}

	if err := a.SaveProgress(ctx, []int{bucket}, start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p, err := b.LoadProgress(ctx, bucket); !p.IsZero() || err != nil {
		t.Fatalf("b.LoadProgress = (%v, %v), want zero: a's progress leaked", p, err)
	}
	if err := b.SaveProgress(ctx, []int{bucket}, start); err != nil {
		t.Fatal(err)
	}
	if p, err := a.LoadProgress(ctx, bucket); !p.Equal(start.Add(time.Hour)) || err != nil {
		t.Fatalf("a.LoadProgress = (%v, %v), want %v", p, err, start.Add(time.Hour))
	}
}

// TestReminderStartExact: Start survives to the nanosecond, also far from
// now.
func TestReminderStartExact(t *testing.T) {
	tbl := newReminderTable(t, postgres.ReminderConfig{DSN: pgtest.DSN(t)})
	ctx := t.Context()
	id := grain.ID{Type: "T", Key: "k"}
	for i, start := range []time.Time{
		time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		name := fmt.Sprint(i)
		if _, err := tbl.Upsert(ctx, reminder.Entry{Grain: id, Name: name, Start: start, Period: time.Nanosecond}); err != nil {
			t.Fatal(err)
		}
		e, ok, err := tbl.Get(ctx, id, name)
		if !ok || err != nil || !e.Start.Equal(start) || e.Period != time.Nanosecond {
			t.Errorf("Get = (%v %v, %v, %v), want start %v, period 1ns", e.Start, e.Period, ok, err, start)
		}
	}
}

// TestListBucketUsesIndex: on a table of many reminders, the planner
// serves ListBucket from the bucket index.
func TestListBucketUsesIndex(t *testing.T) {
	dsn := pgtest.DSN(t)
	pool := newPool(t, dsn, nil)
	newReminderTable(t, postgres.ReminderConfig{Pool: pool, Cluster: "dev"})
	ctx := t.Context()
	// 20,000 reminders spread over all buckets.
	if _, err := pool.Exec(ctx, `INSERT INTO granary_reminders
		(cluster, grain_type, grain_key, name, bucket, start_s, start_ns, period_ns, version)
		SELECT 'dev', 'T', convert_to(i::text, 'UTF8'), 'r', h >> 24, 0, 0, 60000000000, nextval('granary_reminders_version')
		FROM generate_series(1, 20000) AS i, LATERAL (SELECT (i::bigint * 2654435761) % 4294967296 AS h) AS x`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE granary_reminders"); err != nil {
		t.Fatal(err)
	}
	// The index shows in the plan's top node or in the bitmap scan under
	// it.
	rows, err := pool.Query(ctx, `EXPLAIN (FORMAT TEXT, COSTS OFF)
		SELECT grain_type, grain_key, name, start_s, start_ns, period_ns, version
		FROM granary_reminders WHERE cluster = 'dev' AND bucket = 7`)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	full := strings.Join(lines, "\n")
	if !strings.Contains(full, "granary_reminders_bucket") || strings.Contains(full, "Seq Scan") {
		t.Fatalf("ListBucket's plan does not use the bucket index:\n%s", full)
	}
	tbl := newReminderTable(t, postgres.ReminderConfig{Pool: pool, Cluster: "dev"})
	es, err := tbl.ListBucket(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	// (The rows' buckets are made up, not of reminder.Hash of their grains.)
	var want int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM granary_reminders WHERE bucket = 7").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if len(es) != want || want == 0 {
		t.Fatalf("ListBucket(7) returned %d reminders, want %d", len(es), want)
	}
	t.Logf("bucket 7 holds %d reminders; plan:\n%s", len(es), full)
}

// TestReminderOneStatementPerCall: every call is one statement; SaveProgress
// saves all buckets in one.
func TestReminderOneStatementPerCall(t *testing.T) {
	pool, qc := tracedPool(t)
	tbl := newReminderTable(t, postgres.ReminderConfig{Pool: pool})
	ctx := t.Context()
	id := grain.ID{Type: "T", Key: "k"}
	all := make([]int, reminder.Buckets)
	for i := range all {
		all[i] = i
	}
	e := reminder.Entry{Grain: id, Name: "r", Start: time.Now(), Period: time.Minute}
	var err error
	if e.Etag, err = tbl.Upsert(ctx, e); err != nil {
		t.Fatal(err)
	}
	through := time.Now()
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"upsert", func() error {
			_, err := tbl.Upsert(ctx, reminder.Entry{Grain: id, Name: "r", Start: time.Now(), Period: time.Minute})
			return err
		}},
		{"upsert with etag", func() error {
			cur, _, err := tbl.Get(ctx, id, "r")
			if err != nil {
				return err
			}
			qc.queries.Add(-1) // the Get
			_, err = tbl.Upsert(ctx, cur)
			return err
		}},
		{"get", func() error { _, _, err := tbl.Get(ctx, id, "r"); return err }},
		{"list grain", func() error { _, err := tbl.ListGrain(ctx, id); return err }},
		{"list bucket", func() error { _, err := tbl.ListBucket(ctx, 3); return err }},
		{"remove", func() error { _, err := tbl.Remove(ctx, id, "none", ""); return err }},
		{"save progress", func() error { through = through.Add(time.Second); return tbl.SaveProgress(ctx, all, through) }},
		{"load progress", func() error { _, err := tbl.LoadProgress(ctx, 3); return err }},
	} {
		if n := statements(t, qc, c.call); n != 1 {
			t.Errorf("%s sent %d statements, want 1", c.name, n)
		}
	}
	for _, b := range all {
		if p, err := tbl.LoadProgress(ctx, b); !p.Equal(through) || err != nil {
			t.Fatalf("LoadProgress(%d) = (%v, %v), want %v", b, p, err, through)
		}
	}
}
