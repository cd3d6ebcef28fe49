package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/postgres"
	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
	"github.com/granary-rt/granary/runtime/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var tables atomic.Int64

// uniqueTable returns a table name no other test or subtest uses.
func uniqueTable() string { return fmt.Sprintf("state_%d", tables.Add(1)) }

func newProvider(tb testing.TB, cfg postgres.Config) *postgres.Provider {
	tb.Helper()
	if cfg.Table == "" {
		cfg.Table = uniqueTable()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := postgres.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

func newPool(tb testing.TB, dsn string, configure func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg, err := postgres.ParsePoolConfig(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func TestConformance(t *testing.T) {
	dsn := pgtest.DSN(t)
	storagetest.Run(t, func(t *testing.T) storage.Provider {
		return newProvider(t, postgres.Config{DSN: dsn})
	})
}

func TestConformanceSmallLimit(t *testing.T) {
	dsn := pgtest.DSN(t)
	storagetest.Run(t, func(t *testing.T) storage.Provider {
		return newProvider(t, postgres.Config{DSN: dsn, MaxValueBytes: 1000})
	})
}

// TestConformanceSharedPool: providers on a pool the caller owns, several
// tables on one pool.
func TestConformanceSharedPool(t *testing.T) {
	pool := newPool(t, pgtest.DSN(t), nil)
	storagetest.Run(t, func(t *testing.T) storage.Provider {
		return newProvider(t, postgres.Config{Pool: pool})
	})
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatalf("the caller's pool was closed by a provider: %v", err)
	}
}

func TestConfig(t *testing.T) {
	dsn := pgtest.DSN(t)
	pool := newPool(t, dsn, nil)
	for _, tc := range []struct {
		name    string
		cfg     postgres.Config
		wantErr string // substring; "" for success
		wantMax int
	}{
		{"defaults", postgres.Config{DSN: dsn}, "", postgres.DefaultMaxValueBytes},
		{"pool", postgres.Config{Pool: pool, MaxValueBytes: 4096}, "", 4096},
		{"ceiling", postgres.Config{DSN: dsn, MaxValueBytes: postgres.MaxValueBytesCeiling}, "", postgres.MaxValueBytesCeiling},
		{"explicit table", postgres.Config{DSN: dsn, Table: "my_state2"}, "", postgres.DefaultMaxValueBytes},
		{"neither DSN nor pool", postgres.Config{}, "Config.DSN or Config.Pool is required", 0},
		{"both DSN and pool", postgres.Config{DSN: dsn, Pool: pool}, "not both", 0},
		{"bad DSN", postgres.Config{DSN: "postgres://%zz"}, "parse DSN", 0},
		{"negative limit", postgres.Config{DSN: dsn, MaxValueBytes: -1}, "must not be negative", 0},
		{"limit over the ceiling", postgres.Config{DSN: dsn, MaxValueBytes: postgres.MaxValueBytesCeiling + 1}, "at most", 0},
		{"upper-case table", postgres.Config{DSN: dsn, Table: "State"}, "not a plain SQL identifier", 0},
		{"quoted table", postgres.Config{DSN: dsn, Table: `x"; DROP TABLE y; --`}, "not a plain SQL identifier", 0},
		{"schema-qualified table", postgres.Config{DSN: dsn, Table: "public.state"}, "not a plain SQL identifier", 0},
		{"table starting with a digit", postgres.Config{DSN: dsn, Table: "1state"}, "not a plain SQL identifier", 0},
		{"long table", postgres.Config{DSN: dsn, Table: strings.Repeat("t", 49)}, "at most 48", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := postgres.New(t.Context(), tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "postgres: ") {
					if p != nil {
						p.Close()
					}
					t.Fatalf("New(%+v) error = %v, want one containing %q", tc.cfg, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer p.Close()
			if got := p.MaxValueBytes(); got != tc.wantMax {
				t.Fatalf("MaxValueBytes() = %d, want %d", got, tc.wantMax)
			}
		})
	}
}

// TestTwoProviders: two providers, each with its own pool, on one table
// see each other's writes, and their compare-and-set works across them.
func TestTwoProviders(t *testing.T) {
	dsn := pgtest.DSN(t)
	table := uniqueTable()
	a := newProvider(t, postgres.Config{DSN: dsn, Table: table})
	b := newProvider(t, postgres.Config{DSN: dsn, Table: table})
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}

	e1, err := a.Write(ctx, k, []byte("from a"), "")
	if err != nil {
		t.Fatal(err)
	}
	data, etag, err := b.Read(ctx, k)
	if err != nil || string(data) != "from a" || etag != e1 {
		t.Fatalf("b.Read = (%q, %q, %v), want (from a, %q)", data, etag, err, e1)
	}
	e2, err := b.Write(ctx, k, []byte("from b"), e1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(ctx, k, []byte("stale a"), e1); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a's write with the etag b replaced: %v, want ErrConflict", err)
	}
	if _, err := a.Write(ctx, k, []byte("again"), ""); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a's create over b's record: %v, want ErrConflict", err)
	}
	data, etag, err = a.Read(ctx, k)
	if err != nil || string(data) != "from b" || etag != e2 {
		t.Fatalf("a.Read = (%q, %q, %v), want (from b, %q)", data, etag, err, e2)
	}
	if err := a.Clear(ctx, k, e2); err != nil {
		t.Fatal(err)
	}
	if data, etag, err := b.Read(ctx, k); data != nil || etag != "" || err != nil {
		t.Fatalf("b.Read after a's Clear = (%q, %q, %v), want nothing", data, etag, err)
	}
	// Etags come from one sequence per table: b's next record of the key
	// gets none of the key's old etags.
	e3, err := b.Write(ctx, k, []byte("new"), "")
	if err != nil {
		t.Fatal(err)
	}
	if e3 == e1 || e3 == e2 {
		t.Fatalf("etag %q reused after Clear (old: %q, %q)", e3, e1, e2)
	}
}

// TestConcurrentMigrate: providers that start at the same time on a fresh
// table all succeed, and Migrate can run again.
func TestConcurrentMigrate(t *testing.T) {
	dsn := pgtest.DSN(t)
	table := uniqueTable()
	const n = 8
	ps := make([]*postgres.Provider, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ps[i], errs[i] = postgres.New(t.Context(), postgres.Config{DSN: dsn, Table: table})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("New #%d: %v", i, err)
			continue
		}
		defer ps[i].Close()
	}
	if t.Failed() {
		t.FailNow()
	}
	if err := ps[0].Migrate(t.Context()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	k := storage.Key{GrainType: "T", GrainKey: "k"}
	etag, err := ps[1].Write(t.Context(), k, []byte("v"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := ps[n-1].Read(t.Context(), k); got != etag || err != nil {
		t.Fatalf("Read = (%q, %v), want etag %q", got, err, etag)
	}
}

// TestSkipMigrate: with SkipMigrate, New neither connects nor creates the
// table; calls fail clearly until Migrate ran.
func TestSkipMigrate(t *testing.T) {
	dsn := pgtest.DSN(t)
	p := newProvider(t, postgres.Config{DSN: dsn, SkipMigrate: true, Table: "not_created"})
	k := storage.Key{GrainType: "T", GrainKey: "k"}
	_, _, err := p.Read(t.Context(), k)
	if err == nil || !strings.Contains(err.Error(), "not_created") || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Read of a table never created: %v, want an error naming the table and saying it does not exist", err)
	}
	if err := p.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(t.Context(), k, []byte("v"), ""); err != nil {
		t.Fatalf("Write after Migrate: %v", err)
	}
}

// TestTooLarge: values over MaxValueBytes and keys over MaxKeyBytes fail
// with ErrTooLarge and write nothing; a key of exactly MaxKeyBytes fits the
// table's primary key index.
func TestTooLarge(t *testing.T) {
	const limit = 4096
	p := newProvider(t, postgres.Config{DSN: pgtest.DSN(t), MaxValueBytes: limit})
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}

	_, err := p.Write(ctx, k, make([]byte, limit+1), "")
	if !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("Write of %d bytes with a limit of %d: %v, want ErrTooLarge", limit+1, limit, err)
	}
	if msg := err.Error(); !strings.Contains(msg, strconv.Itoa(limit+1)) || !strings.Contains(msg, strconv.Itoa(limit)) || !strings.Contains(msg, "T/k#s") {
		t.Errorf("error %q should name the key, the size and the limit", msg)
	}
	if data, etag, err := p.Read(ctx, k); data != nil || etag != "" || err != nil {
		t.Fatalf("Read after the refused write = (%d bytes, %q, %v), want nothing", len(data), etag, err)
	}
	if _, err := p.Write(ctx, k, make([]byte, limit), ""); err != nil {
		t.Fatalf("Write of exactly the limit: %v", err)
	}

	// Keys. Random bytes do not compress, so the index entry really is
	// that long.
	long := storage.Key{GrainType: "T", GrainKey: string(randomBytes(postgres.MaxKeyBytes - 2)), State: "s"}
	etag, err := p.Write(ctx, long, []byte("v"), "")
	if err != nil {
		t.Fatalf("Write under a key of MaxKeyBytes (%d): %v", postgres.MaxKeyBytes, err)
	}
	if data, got, err := p.Read(ctx, long); string(data) != "v" || got != etag || err != nil {
		t.Fatalf("Read under a key of MaxKeyBytes = (%q, %q, %v)", data, got, err)
	}
	long.State += "x"
	if _, err := p.Write(ctx, long, []byte("v"), ""); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("Write under a key of MaxKeyBytes+1: %v, want ErrTooLarge", err)
	}
	if _, _, err := p.Read(ctx, long); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("Read under a key of MaxKeyBytes+1: %v, want ErrTooLarge", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(uint32(i)*2654435761>>13) ^ byte(i>>8)
	}
	return b
}

// TestUnreachable: a server that refuses connections, and one that accepts
// them and never answers, fail New (which migrates) and every call (with
// SkipMigrate) by the context's deadline, naming the server.
func TestUnreachable(t *testing.T) {
	// A port nothing listens on: refused at once.
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	_ = refused.Close()

	// A listener that accepts connections and never says anything.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = silent.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})

	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	const timeout = 500 * time.Millisecond
	for _, server := range []struct{ name, addr string }{{"refused", refusedAddr}, {"silent", silent.Addr().String()}} {
		host, port, _ := net.SplitHostPort(server.addr)
		dsn := fmt.Sprintf("host=%s port=%s user=u dbname=d sslmode=disable", host, port)
		check := func(t *testing.T, what string, call func(ctx context.Context) error) {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			err := call(ctx)
			elapsed := time.Since(start)
			if err == nil {
				t.Fatalf("%s on an unreachable server succeeded", what)
			}
			if elapsed > timeout+time.Second {
				t.Errorf("%s failed after %v; the context allowed %v", what, elapsed, timeout)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "postgres: ") || !strings.Contains(msg, server.addr) {
				t.Errorf("%s: error %q should start with postgres: and name the server %s", what, msg, server.addr)
			}
			if server.name == "silent" && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: error %v does not wrap context.DeadlineExceeded", what, err)
			}
			t.Logf("%s: after %v: %v", what, elapsed.Round(time.Millisecond), err)
		}
		t.Run(server.name, func(t *testing.T) {
			check(t, "New", func(ctx context.Context) error {
				p, err := postgres.New(ctx, postgres.Config{DSN: dsn})
				if err == nil {
					p.Close()
				}
				return err
			})
			p := newProvider(t, postgres.Config{DSN: dsn, SkipMigrate: true})
			check(t, "Read", func(ctx context.Context) error { _, _, err := p.Read(ctx, k); return err })
			check(t, "Write", func(ctx context.Context) error { _, err := p.Write(ctx, k, []byte("v"), ""); return err })
			check(t, "Clear", func(ctx context.Context) error { return p.Clear(ctx, k, "7") })
		})
	}
}

// TestContextEndsBlockedCall: a write blocked on a row lock returns when
// its context ends, with the context's error, and writes nothing, also
// after the lock is released: the statement was cancelled on the server.
// On a pool New created, and on one built with ParsePoolConfig.
func TestContextEndsBlockedCall(t *testing.T) {
	dsn := pgtest.DSN(t)
	for _, c := range []struct {
		name string
		cfg  func() postgres.Config
	}{
		{"dsn", func() postgres.Config { return postgres.Config{DSN: dsn} }},
		{"pool", func() postgres.Config { return postgres.Config{Pool: newPool(t, dsn, nil)} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg()
			cfg.Table = uniqueTable()
			p := newProvider(t, cfg)
			ctx := t.Context()
			k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
			etag, err := p.Write(ctx, k, []byte("v1"), "")
			if err != nil {
				t.Fatal(err)
			}

			// Another session locks the row.
			locker, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer locker.Close(context.Background())
			tx, err := locker.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background())
			if _, err := tx.Exec(ctx, "SELECT 1 FROM "+cfg.Table+" FOR UPDATE"); err != nil {
				t.Fatal(err)
			}

			const timeout = 300 * time.Millisecond
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			_, err = p.Write(wctx, k, []byte("v2"), etag)
			elapsed := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("blocked Write: %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if elapsed > timeout+time.Second {
				t.Fatalf("blocked Write returned after %v; the context allowed %v", elapsed, timeout)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if data, got, err := p.Read(ctx, k); string(data) != "v1" || got != etag || err != nil {
				t.Fatalf("Read = (%q, %q, %v), want the record unchanged (v1, %q)", data, got, err, etag)
			}
		})
	}
}

// queryCounter is a pgx tracer that counts statements and prepares.
type queryCounter struct{ queries, prepares atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}
func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *queryCounter) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	c.prepares.Add(1)
	return ctx
}
func (c *queryCounter) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// tracedPool returns a one-connection pool whose statements are counted.
func tracedPool(t *testing.T) (*pgxpool.Pool, *queryCounter) {
	qc := &queryCounter{}
	pool := newPool(t, pgtest.DSN(t), func(cfg *pgxpool.Config) {
		cfg.MaxConns = 1
		cfg.ConnConfig.Tracer = qc
	})
	return pool, qc
}

// statements returns how many statements call sent, after a first call
// that warmed the statement cache.
func statements(t *testing.T, qc *queryCounter, call func() error) int64 {
	t.Helper()
	if err := call(); err != nil {
		t.Fatal(err)
	}
	q, p := qc.queries.Load(), qc.prepares.Load()
	if err := call(); err != nil {
		t.Fatal(err)
	}
	if dp := qc.prepares.Load() - p; dp != 0 {
		t.Errorf("a warmed-up call prepared %d statements", dp)
	}
	return qc.queries.Load() - q
}

// TestOneStatementPerCall: every call is one statement, with no
// transaction around it: one round trip.
func TestOneStatementPerCall(t *testing.T) {
	pool, qc := tracedPool(t)
	p := newProvider(t, postgres.Config{Pool: pool})
	ctx := t.Context()
	k := storage.Key{GrainType: "T", GrainKey: "k", State: "s"}
	i := 0
	etag, err := p.Write(ctx, k, []byte("v"), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { _, _, err := p.Read(ctx, k); return err }},
		{"create", func() error {
			i++
			_, err := p.Write(ctx, storage.Key{GrainType: "T", GrainKey: strconv.Itoa(i)}, []byte("v"), "")
			return err
		}},
		{"write", func() error { var err error; etag, err = p.Write(ctx, k, []byte("v"), etag); return err }},
		{"clear missing", func() error { return p.Clear(ctx, storage.Key{GrainType: "none"}, "") }},
		{"clear", func() error {
			var err error
			if etag, err = p.Write(ctx, k, []byte("v"), etag); err != nil {
				return err
			}
			qc.queries.Add(-1) // the write that sets up the record
			err = p.Clear(ctx, k, etag)
			etag = ""
			return err
		}},
	} {
		if n := statements(t, qc, c.call); n != 1 {
			t.Errorf("%s sent %d statements, want 1", c.name, n)
		}
	}
}

// A pool from a DSN that does not size it holds DefaultMaxConns
// connections (at least pgx's own default); a DSN that does is obeyed.
func TestParsePoolConfigSize(t *testing.T) {
	cfg, err := postgres.ParsePoolConfig("host=db dbname=granary")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns < postgres.DefaultMaxConns {
		t.Errorf("MaxConns = %d, want at least %d", cfg.MaxConns, postgres.DefaultMaxConns)
	}
	cfg, err = postgres.ParsePoolConfig("host=db dbname=granary pool_max_conns=3")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 3 {
		t.Errorf("MaxConns = %d with pool_max_conns=3", cfg.MaxConns)
	}
}
