package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/runtime/storage"
)

const (
	// DefaultTable is the state table's name when Config.Table is empty.
	DefaultTable = "granary_state"
	// DefaultMaxValueBytes is the value size limit when Config.MaxValueBytes
	// is zero.
	DefaultMaxValueBytes = 16 << 20
	// MaxValueBytesCeiling is the largest Config.MaxValueBytes accepted,
	// well below PostgreSQL's 1 GB limit for one field and one message.
	MaxValueBytesCeiling = 256 << 20
	// MaxKeyBytes bounds the length of a key: its GrainType, GrainKey and
	// State together. The key is the table's primary key, and a B-tree
	// entry must fit in a third of a page; a longer key fails with
	// storage.ErrTooLarge without a round trip.
	MaxKeyBytes = 2048
)

// Config configures a Provider. Exactly one of DSN and Pool is required.
type Config struct {
	// DSN is a PostgreSQL connection string, as a URL
	// ("postgres://user:pass@host:5432/db?sslmode=disable") or in
	// keyword/value form ("host=... dbname=..."); pool settings such as
	// pool_max_conns are accepted too. New creates a pool that Close
	// closes.
	DSN string
	// Pool is an existing pool to use instead of DSN. The provider does not
	// own it: Close leaves it open.
	Pool *pgxpool.Pool
	// Table is the name of the state table: a lower-case SQL identifier.
	// Default DefaultTable ("granary_state"). Its sequence is named
	// <Table>_version. To use a schema other than the first of the
	// search_path, set search_path in the DSN.
	Table string
	// MaxValueBytes is the largest value Write accepts, in bytes.
	// Default DefaultMaxValueBytes (16 MiB); at most MaxValueBytesCeiling.
	MaxValueBytes int
	// SkipMigrate makes New leave the schema alone (it was created by
	// Migrate, or by a DBA from the statements in the package doc). New
	// then does not connect at all: the first call does.
	SkipMigrate bool
	// Logger receives debug logs (conflicts, failed calls). Default: none.
	Logger *zap.Logger
}

// validate fills defaults and rejects nonsense.
func (c *Config) validate() error {
	if err := checkSource("Config", c.DSN, c.Pool); err != nil {
		return err
	}
	switch {
	case c.MaxValueBytes < 0:
		return fmt.Errorf("postgres: Config.MaxValueBytes is %d; it must not be negative (0 means the default, %d)",
			c.MaxValueBytes, DefaultMaxValueBytes)
	case c.MaxValueBytes > MaxValueBytesCeiling:
		return fmt.Errorf("postgres: Config.MaxValueBytes is %d; at most %d", c.MaxValueBytes, MaxValueBytesCeiling)
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if err := checkIdent("Config.Table", c.Table); err != nil {
		return err
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Provider stores grain state in a PostgreSQL table. It is safe for
// concurrent use.
type Provider struct {
	c   conn
	cfg Config
	log *zap.Logger
	sql providerSQL
}

var (
	_ storage.Provider = (*Provider)(nil)
	_ storage.Limiter  = (*Provider)(nil)
)

// providerSQL is the text of every statement, with the table name in it.
type providerSQL struct {
	schema                       []string
	read, insert, update, exists string
	deleteVersion                string
	table                        string // quoted, for messages
}

func newProviderSQL(table string) providerSQL {
	t, seq := ident(table), ident(table+"_version")
	const key = "grain_type = $1 AND grain_key = $2 AND state = $3"
	return providerSQL{
		schema: []string{
			"CREATE SEQUENCE IF NOT EXISTS " + seq + " AS bigint",
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	grain_type bytea NOT NULL,
	grain_key bytea NOT NULL,
	state bytea NOT NULL,
	version bigint NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (grain_type, grain_key, state)
) WITH (fillfactor = 90)`,
		},
		read: "SELECT data, version FROM " + t + " WHERE " + key,
		insert: "INSERT INTO " + t + " (grain_type, grain_key, state, version, data) " +
			"VALUES ($1, $2, $3, nextval('" + seq + "'), $4) ON CONFLICT DO NOTHING RETURNING version",
		update: "UPDATE " + t + " SET data = $4, version = nextval('" + seq + "') " +
			"WHERE " + key + " AND version = $5 RETURNING version",
		exists:        "SELECT EXISTS (SELECT 1 FROM " + t + " WHERE " + key + ")",
		deleteVersion: "DELETE FROM " + t + " WHERE " + key + " AND version = $4",
		table:         table,
	}
}

// New returns a provider on the configured pool. Unless cfg.SkipMigrate is
// set it creates the table if needed (see Migrate), so it fails, within
// ctx, when the server cannot be reached.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sql := newProviderSQL(cfg.Table)
	c, err := connect(ctx, cfg.DSN, cfg.Pool, !cfg.SkipMigrate, "table "+cfg.Table, sql.schema)
	if err != nil {
		return nil, err
	}
	p := &Provider{c: c, cfg: cfg, log: cfg.Logger.Named("postgres"), sql: sql}
	p.log.Debug("provider ready", zap.String("server", c.where), zap.String("table", cfg.Table),
		zap.Int("max_value_bytes", cfg.MaxValueBytes))
	return p, nil
}

// Migrate creates the state table and its version sequence if they do not
// exist. It is idempotent and safe to run from several silos at once: the
// statements run in one transaction holding an advisory lock.
func (p *Provider) Migrate(ctx context.Context) error {
	return p.c.migrateSchema(ctx, "table "+p.sql.table, p.sql.schema)
}

// Close closes the pool if New created it from Config.DSN; a pool passed
// in Config.Pool stays open. Calls after Close fail.
func (p *Provider) Close() { p.c.close() }

// MaxValueBytes returns the configured value size limit.
func (p *Provider) MaxValueBytes() int { return p.cfg.MaxValueBytes }

// Read returns the record's data and etag (its version), or (nil, "", nil)
// if there is no record. It is one query.
func (p *Provider) Read(ctx context.Context, k storage.Key) ([]byte, string, error) {
	if err := p.precheck(ctx, "read", k); err != nil {
		return nil, "", err
	}
	var (
		data    []byte
		version int64
	)
	gt, gk, st := keyArgs(k)
	err := p.c.pool.QueryRow(ctx, p.sql.read, gt, gk, st).Scan(&data, &version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, "", nil
	case err != nil:
		return nil, "", p.callError(ctx, "read", k, err)
	}
	if data == nil {
		data = []byte{} // an empty value is still a record
	}
	return data, formatEtag(version), nil
}

// Write stores data if etag is the record's current etag ("" for a record
// that must not exist yet) and returns the new etag. It is one statement:
// an INSERT ... ON CONFLICT DO NOTHING for etag "", else an UPDATE guarded
// by the version. A stale or malformed etag fails with an error wrapping
// storage.ErrConflict; a value over MaxValueBytes with one wrapping
// storage.ErrTooLarge.
func (p *Provider) Write(ctx context.Context, k storage.Key, data []byte, etag string) (string, error) {
	if len(data) > p.cfg.MaxValueBytes {
		return "", fmt.Errorf("postgres: write %s: value is %d bytes, limit is %d: %w",
			k, len(data), p.cfg.MaxValueBytes, storage.ErrTooLarge)
	}
	if err := p.precheck(ctx, "write", k); err != nil {
		return "", err
	}
	if data == nil {
		data = []byte{} // pgx sends a nil slice as NULL
	}
	gt, gk, st := keyArgs(k)
	var (
		version int64
		err     error
	)
	if etag == "" {
		err = p.c.pool.QueryRow(ctx, p.sql.insert, gt, gk, st, data).Scan(&version)
	} else {
		v, ok := parseEtag(etag)
		if !ok {
			return "", p.malformed("write", k, etag)
		}
		err = p.c.pool.QueryRow(ctx, p.sql.update, gt, gk, st, data, v).Scan(&version)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", p.conflict("write", k, etag)
	case err != nil:
		return "", p.callError(ctx, "write", k, err)
	}
	return formatEtag(version), nil
}

// Clear deletes the record if etag is its current etag. Clearing a missing
// record with etag "" succeeds. Otherwise it fails like Write. It is one
// statement.
func (p *Provider) Clear(ctx context.Context, k storage.Key, etag string) error {
	if err := p.precheck(ctx, "clear", k); err != nil {
		return err
	}
	gt, gk, st := keyArgs(k)
	if etag == "" {
		var exists bool
		if err := p.c.pool.QueryRow(ctx, p.sql.exists, gt, gk, st).Scan(&exists); err != nil {
			return p.callError(ctx, "clear", k, err)
		}
		if exists {
			return p.conflict("clear", k, etag)
		}
		return nil
	}
	v, ok := parseEtag(etag)
	if !ok {
		return p.malformed("clear", k, etag)
	}
	tag, err := p.c.pool.Exec(ctx, p.sql.deleteVersion, gt, gk, st, v)
	if err != nil {
		return p.callError(ctx, "clear", k, err)
	}
	if tag.RowsAffected() == 0 {
		return p.conflict("clear", k, etag)
	}
	return nil
}

// precheck fails a call whose key is too long or whose context has ended,
// before any round trip.
func (p *Provider) precheck(ctx context.Context, op string, k storage.Key) error {
	if n := len(k.GrainType) + len(k.GrainKey) + len(k.State); n > MaxKeyBytes {
		return fmt.Errorf("postgres: %s %.64s...: key is %d bytes, limit is %d: %w",
			op, k.String(), n, MaxKeyBytes, storage.ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s %s: %w", op, k, err)
	}
	return nil
}

// keyArgs returns the key's components as bytea arguments: PostgreSQL text
// cannot hold NUL bytes or invalid UTF-8, and a Go string can.
func keyArgs(k storage.Key) (grainType, grainKey, state []byte) {
	return []byte(k.GrainType), []byte(k.GrainKey), []byte(k.State)
}

func (p *Provider) malformed(op string, k storage.Key, etag string) error {
	p.log.Debug("malformed etag", zap.String("op", op), zap.Stringer("key", k), zap.String("etag", etag))
	return fmt.Errorf("postgres: %s %s: malformed etag %q (no record can have it): %w", op, k, etag, storage.ErrConflict)
}

func (p *Provider) conflict(op string, k storage.Key, etag string) error {
	p.log.Debug("etag conflict", zap.String("op", op), zap.Stringer("key", k), zap.String("etag", etag))
	if etag == "" {
		return fmt.Errorf("postgres: %s %s: etag \"\" given but the record exists: %w", op, k, storage.ErrConflict)
	}
	return fmt.Errorf("postgres: %s %s: etag %q is not the record's current etag (it was written or cleared since): %w",
		op, k, etag, storage.ErrConflict)
}

func (p *Provider) callError(ctx context.Context, op string, k storage.Key, err error) error {
	if isProgramLimit(err) {
		err = fmt.Errorf("%w (%w)", err, storage.ErrTooLarge)
	}
	err = callError(ctx, err)
	p.log.Debug("call failed", zap.String("op", op), zap.Stringer("key", k), zap.String("server", p.c.where), zap.Error(err))
	return fmt.Errorf("postgres: %s %s (table %s on %s): %w", op, k, p.sql.table, p.c.where, err)
}

// parseEtag returns the version an etag stands for. Only the canonical
// decimal form of a positive version is an etag: anything else cannot be
// any record's, and is refused without a round trip.
func parseEtag(etag string) (int64, bool) {
	v, err := strconv.ParseInt(etag, 10, 64)
	if err != nil || v <= 0 || formatEtag(v) != etag {
		return 0, false
	}
	return v, true
}

func formatEtag(version int64) string { return strconv.FormatInt(version, 10) }
