package pgtest_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func currentDatabase(t *testing.T, ctx context.Context, c *pgx.Conn) string {
	t.Helper()
	var name string
	if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestDSN: every call gets a database of its own, empty and writable, that
// is dropped when its test ends; concurrent calls do not interfere.
func TestDSN(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	const n = 4
	names := make([]string, n)
	t.Run("group", func(t *testing.T) {
		for i := range n {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				c := connect(t, ctx, pgtest.DSN(t))
				names[i] = currentDatabase(t, ctx, c)
				var tables int
				if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
					t.Fatal(err)
				}
				if tables != 0 {
					t.Fatalf("fresh database %s has %d tables", names[i], tables)
				}
				if _, err := c.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	seen := map[string]bool{}
	for _, name := range names {
		if name == "" || seen[name] {
			t.Fatalf("databases %v: want %d distinct names", names, n)
		}
		seen[name] = true
	}

	// After the subtests ended, their databases are gone.
	admin := connect(t, ctx, pgtest.DSN(t))
	for _, name := range names {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("database %s still exists after its test ended", name)
		}
	}
}

// TestServer: Stop makes queries fail at once (connecting is refused),
// Start makes them succeed again on the same DSN with the
// data kept.
func TestServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	srv := pgtest.StartServer(t)
	dsn := srv.DSN()

	c := connect(t, ctx, dsn)
	if _, err := c.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	srv.Stop() // idempotent
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	defer qcancel()
	if _, err := c.Exec(qctx, "SELECT 1"); err == nil {
		t.Fatal("query on a connection to a stopped server succeeded")
	}
	start := time.Now()
	if c2, err := pgx.Connect(qctx, dsn); err == nil {
		_ = c2.Close(ctx)
		t.Fatal("connected to a stopped server")
	} else if time.Since(start) > time.Second {
		t.Errorf("connecting to a stopped server took %v; want it refused at once: %v", time.Since(start), err)
	}
	srv.Start()
	srv.Start() // idempotent
	if srv.DSN() != dsn {
		t.Fatalf("DSN changed across Stop/Start: %s, then %s", dsn, srv.DSN())
	}
	c3 := connect(t, ctx, dsn)
	var x int
	if err := c3.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("after restart: x = %d, %v; want 42", x, err)
	}
}

// TestServersInParallel: several private servers run side by side, each on
// a port of its own.
func TestServersInParallel(t *testing.T) {
	const n = 3
	var (
		mu    sync.Mutex
		ports = map[int]bool{}
	)
	for i := range n {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			srv := pgtest.StartServer(t)
			c := connect(t, t.Context(), srv.DSN())
			if name := currentDatabase(t, t.Context(), c); name != "postgres" {
				t.Fatalf("current database %q", name)
			}
			mu.Lock()
			defer mu.Unlock()
			if ports[srv.Port()] {
				t.Fatalf("port %d given to two servers", srv.Port())
			}
			ports[srv.Port()] = true
		})
	}
}
