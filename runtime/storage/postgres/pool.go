package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// maxIdentBytes bounds a configured table name: PostgreSQL truncates
// identifiers at 63 bytes, and the names derived from a table name (its
// sequence, index and progress table) add at most 9 bytes.
const maxIdentBytes = 48

// migrateLockKey is the pg_advisory_xact_lock key every Migrate of this
// package holds while it creates its schema, so silos that start together
// do not race on CREATE ... IF NOT EXISTS (which is not safe against
// concurrent creation of the same object). It is "granary" in ASCII.
const migrateLockKey = 0x6772616e617279

// cancelGrace is how long a call whose context ended waits for the
// server to confirm the cancellation of its statement before the
// connection is dropped.
const cancelGrace = time.Second

// rollbackTimeout bounds the rollback of a failed migration, which runs
// after the caller's context may have ended.
const rollbackTimeout = 5 * time.Second

// checkIdent reports whether name is a table name this package accepts: a
// lower-case SQL identifier (letters a-z, digits, underscores; not starting
// with a digit) of at most maxIdentBytes bytes. Names are quoted in SQL
// anyway; the rule keeps them free of case-folding and quoting surprises.
// To put the tables in another schema, set search_path in the DSN
// (options='-c search_path=myschema').
func checkIdent(field, name string) error {
	if name == "" {
		return fmt.Errorf("postgres: %s must not be empty", field)
	}
	if len(name) > maxIdentBytes {
		return fmt.Errorf("postgres: %s %q is %d bytes; at most %d", field, name, len(name), maxIdentBytes)
	}
	for i, r := range name {
		ok := r == '_' || ('a' <= r && r <= 'z') || (i > 0 && '0' <= r && r <= '9')
		if !ok {
			return fmt.Errorf("postgres: %s %q is not a plain SQL identifier: use lower-case letters, digits and underscores, not starting with a digit", field, name)
		}
	}
	return nil
}

// checkSource checks that exactly one of a config's DSN and Pool is set.
func checkSource(config, dsn string, pool *pgxpool.Pool) error {
	switch {
	case dsn == "" && pool == nil:
		return fmt.Errorf("postgres: %s.DSN or %[1]s.Pool is required", config)
	case dsn != "" && pool != nil:
		return fmt.Errorf("postgres: set one of %s.DSN and %[1]s.Pool, not both", config)
	}
	return nil
}

// ident quotes an identifier for SQL text.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// conn is the connection state Provider and ReminderTable share.
type conn struct {
	pool  *pgxpool.Pool
	owned bool   // the pool was created from a DSN and is closed by close
	where string // "host:port/database", for error messages
}

// ParsePoolConfig parses a DSN into a pool configuration set up the way
// New and NewReminderTable set up the pools they create: when a call's
// context ends while its statement runs, pgx asks the server to cancel the
// statement (and drops the connection only if the server has not answered
// within a second). pgx's default drops the connection at once, and a
// statement the server goes on with (one waiting for a lock, say) then
// still commits after the call returned its error. Unless the DSN sets
// pool_max_conns, the pool holds up to DefaultMaxConns connections (pgx's
// own default, 4 on a small machine, queues a silo's concurrent writes;
// pgx's default is kept where it is larger).
// Use it to build a pool to share between a Provider and a ReminderTable:
//
//	cfg, err := postgres.ParsePoolConfig(dsn)
//	...
//	pool, err := pgxpool.NewWithConfig(ctx, cfg)
func ParsePoolConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors do not repeat the DSN, which may hold a
		// password: safe to return as they are.
		return nil, fmt.Errorf("postgres: parse DSN: %w", err)
	}
	cfg.ConnConfig.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: cancelGrace}
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, DefaultMaxConns)
	}
	return cfg, nil
}

// DefaultMaxConns is the smallest pool this package creates when the DSN
// does not say (pool_max_conns=N): a silo writes the states of many grains
// at once, one statement each. A silo with a provider and a reminder table
// holds two pools: six such silos stay under PostgreSQL's default
// max_connections (100).
const DefaultMaxConns = 8

// openPool returns pool if it is not nil (the caller keeps owning it), else
// a new pool for dsn, configured by ParsePoolConfig. Creating a pool does
// not connect.
func openPool(ctx context.Context, dsn string, pool *pgxpool.Pool) (conn, error) {
	if pool != nil {
		return conn{pool: pool, where: describe(pool.Config())}, nil
	}
	cfg, err := ParsePoolConfig(dsn)
	if err != nil {
		return conn{}, err
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return conn{}, fmt.Errorf("postgres: create pool for %s: %w", describe(cfg), err)
	}
	return conn{pool: p, owned: true, where: describe(cfg)}, nil
}

// describe names the server and database of a pool, without credentials.
func describe(cfg *pgxpool.Config) string {
	cc := cfg.ConnConfig
	host := cc.Host
	if strings.HasPrefix(host, "/") {
		host += ":" + strconv.Itoa(int(cc.Port)) // a socket directory
	} else {
		host = net.JoinHostPort(host, strconv.Itoa(int(cc.Port)))
	}
	return host + "/" + cc.Database
}

func (c conn) close() {
	if c.owned {
		c.pool.Close()
	}
}

// connect opens the pool (see openPool) and, if migrate is set, creates
// the schema what with stmts.
func connect(ctx context.Context, dsn string, pool *pgxpool.Pool, migrate bool, what string, stmts []string) (conn, error) {
	c, err := openPool(ctx, dsn, pool)
	if err != nil {
		return conn{}, err
	}
	if migrate {
		if err := c.migrateSchema(ctx, what, stmts); err != nil {
			c.close()
			return conn{}, err
		}
	}
	return c, nil
}

// migrateSchema runs migrate and wraps its error.
func (c conn) migrateSchema(ctx context.Context, what string, stmts []string) error {
	if err := c.migrate(ctx, stmts); err != nil {
		return fmt.Errorf("postgres: migrate %s on %s: %w", what, c.where, callError(ctx, err))
	}
	return nil
}

// migrate runs stmts in one transaction that holds the package's advisory
// lock, so concurrent migrations of one database run one after another and
// each later one finds the objects in place.
func (c conn) migrate(ctx context.Context, stmts []string) (err error) {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// The transaction may already be gone with its connection;
			// the migration error is the one worth reporting.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			_ = tx.Rollback(rctx)
		}
	}()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLockKey)); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", firstLine(s), err)
		}
	}
	return tx.Commit(ctx)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// callError wraps err, an error of a call to the server. When ctx ended the
// result also wraps ctx.Err(), whatever pgx reported, so callers can test
// for context.Canceled and context.DeadlineExceeded.
func callError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}

// isProgramLimit reports a PostgreSQL "program limit exceeded" error (class
// 54), e.g. an index row too large for a B-tree page.
func isProgramLimit(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "54")
}
