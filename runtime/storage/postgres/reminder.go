package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/reminder"
)

// DefaultReminderTable is the reminder table's name when
// ReminderConfig.Table is empty. Its progress table is
// "granary_reminders_progress".
const DefaultReminderTable = "granary_reminders"

// maxClusterBytes bounds ReminderConfig.Cluster.
const maxClusterBytes = 256

// ReminderConfig configures a ReminderTable. Exactly one of DSN and Pool
// is required, and Cluster.
type ReminderConfig struct {
	// DSN is a PostgreSQL connection string (see Config.DSN). New creates
	// a pool that Close closes.
	DSN string
	// Pool is an existing pool to use instead of DSN, e.g. the one the
	// state provider uses. The table does not own it.
	Pool *pgxpool.Pool
	// Cluster scopes the reminders and the progress: tables of different
	// clusters may share the database tables and never see each other's
	// rows. Use the runtime's cluster name. Required.
	Cluster string
	// Table is the name of the reminder table: a lower-case SQL
	// identifier. Default DefaultReminderTable ("granary_reminders"). The
	// progress table is <Table>_progress, the version sequence
	// <Table>_version and the bucket index <Table>_bucket.
	Table string
	// SkipMigrate makes NewReminderTable leave the schema alone and not
	// connect; the first call does.
	SkipMigrate bool
	// Logger receives debug logs (conflicts, failed calls). Default: none.
	Logger *zap.Logger
}

func (c *ReminderConfig) validate() error {
	if err := checkSource("ReminderConfig", c.DSN, c.Pool); err != nil {
		return err
	}
	switch {
	case c.Cluster == "":
		return errors.New("postgres: ReminderConfig.Cluster is required: the name of the cluster whose reminders the table holds")
	case len(c.Cluster) > maxClusterBytes:
		return fmt.Errorf("postgres: ReminderConfig.Cluster is %d bytes; at most %d", len(c.Cluster), maxClusterBytes)
	case !utf8.ValidString(c.Cluster) || containsControl(c.Cluster):
		return fmt.Errorf("postgres: ReminderConfig.Cluster %q must be UTF-8 without control characters", c.Cluster)
	}
	if c.Table == "" {
		c.Table = DefaultReminderTable
	}
	if err := checkIdent("ReminderConfig.Table", c.Table); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

func containsControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// ReminderTable is a reminder.Table in PostgreSQL, scoped to one cluster.
// It is safe for concurrent use; every method is one statement.
type ReminderTable struct {
	c       conn
	cluster string
	log     *zap.Logger
	sql     reminderSQL
}

var _ reminder.Table = (*ReminderTable)(nil)

type reminderSQL struct {
	schema                     []string
	upsert, upsertIf           string
	remove, removeIf           string
	get, listGrain, listBucket string
	saveProgress, loadProgress string
	table                      string
}

func newReminderSQL(table string) reminderSQL {
	t, seq, idx, prog := ident(table), ident(table+"_version"), ident(table+"_bucket"), ident(table+"_progress")
	const key = "cluster = $1 AND grain_type = $2 AND grain_key = $3 AND name = $4"
	const cols = "start_s, start_ns, period_ns, version"
	return reminderSQL{
		schema: []string{
			"CREATE SEQUENCE IF NOT EXISTS " + seq + " AS bigint",
			// Start is kept exactly, as Unix seconds and nanoseconds.
			// bucket is reminder.BucketOf(reminder.Hash(grain)).
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	cluster text NOT NULL,
	grain_type bytea NOT NULL,
	grain_key bytea NOT NULL,
	name bytea NOT NULL,
	bucket smallint NOT NULL CHECK (bucket >= 0 AND bucket < 256),
	start_s bigint NOT NULL,
	start_ns integer NOT NULL,
	period_ns bigint NOT NULL,
	version bigint NOT NULL,
	PRIMARY KEY (cluster, grain_type, grain_key, name)
)`,
			"CREATE INDEX IF NOT EXISTS " + idx + " ON " + t + " (cluster, bucket)",
			`CREATE TABLE IF NOT EXISTS ` + prog + ` (
	cluster text NOT NULL,
	bucket smallint NOT NULL,
	through_s bigint NOT NULL,
	through_ns integer NOT NULL,
	PRIMARY KEY (cluster, bucket)
)`,
		},
		upsert: "INSERT INTO " + t + " (cluster, grain_type, grain_key, name, bucket, " + cols + ") " +
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nextval('" + seq + "')) " +
			"ON CONFLICT (cluster, grain_type, grain_key, name) DO UPDATE SET " +
			"start_s = EXCLUDED.start_s, start_ns = EXCLUDED.start_ns, period_ns = EXCLUDED.period_ns, version = EXCLUDED.version " +
			"RETURNING version",
		upsertIf: "UPDATE " + t + " SET start_s = $5, start_ns = $6, period_ns = $7, version = nextval('" + seq + "') " +
			"WHERE " + key + " AND version = $8 RETURNING version",
		remove:     "DELETE FROM " + t + " WHERE " + key,
		removeIf:   "DELETE FROM " + t + " WHERE " + key + " AND version = $5",
		get:        "SELECT " + cols + " FROM " + t + " WHERE " + key,
		listGrain:  "SELECT name, " + cols + " FROM " + t + " WHERE cluster = $1 AND grain_type = $2 AND grain_key = $3 ORDER BY name",
		listBucket: "SELECT grain_type, grain_key, name, " + cols + " FROM " + t + " WHERE cluster = $1 AND bucket = $2",
		// The buckets come sorted, so concurrent saves lock the rows in
		// the same order and cannot deadlock. The WHERE keeps progress
		// from moving backwards (the greatest of the two wins) and skips
		// writing rows that would not change.
		saveProgress: "INSERT INTO " + prog + " AS cur (cluster, bucket, through_s, through_ns) " +
			"SELECT $1, b, $3, $4 FROM unnest($2::smallint[]) AS b " +
			"ON CONFLICT (cluster, bucket) DO UPDATE SET through_s = EXCLUDED.through_s, through_ns = EXCLUDED.through_ns " +
			"WHERE (cur.through_s, cur.through_ns) < (EXCLUDED.through_s, EXCLUDED.through_ns)",
		loadProgress: "SELECT through_s, through_ns FROM " + prog + " WHERE cluster = $1 AND bucket = $2",
		table:        table,
	}
}

// NewReminderTable returns the reminder table of cfg.Cluster on the
// configured pool. Unless cfg.SkipMigrate is set it creates the tables if
// needed (see Migrate), so it fails, within ctx, when the server cannot be
// reached.
func NewReminderTable(ctx context.Context, cfg ReminderConfig) (*ReminderTable, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sql := newReminderSQL(cfg.Table)
	c, err := connect(ctx, cfg.DSN, cfg.Pool, !cfg.SkipMigrate, "reminder table "+cfg.Table, sql.schema)
	if err != nil {
		return nil, err
	}
	t := &ReminderTable{c: c, cluster: cfg.Cluster, log: cfg.Logger.Named("postgres.reminders"), sql: sql}
	t.log.Debug("reminder table ready", zap.String("server", c.where), zap.String("table", cfg.Table),
		zap.String("cluster", cfg.Cluster))
	return t, nil
}

// Migrate creates the reminder table, its bucket index, its version
// sequence and the progress table if they do not exist. Like
// Provider.Migrate it is idempotent and safe to run concurrently.
func (t *ReminderTable) Migrate(ctx context.Context) error {
	return t.c.migrateSchema(ctx, "reminder table "+t.sql.table, t.sql.schema)
}

// Close closes the pool if NewReminderTable created it from
// ReminderConfig.DSN; a pool passed in ReminderConfig.Pool stays open.
func (t *ReminderTable) Close() { t.c.close() }

// Upsert creates or replaces the reminder; with e.Etag set, only if that is
// its current etag.
func (t *ReminderTable) Upsert(ctx context.Context, e reminder.Entry) (string, error) {
	if err := e.Validate(); err != nil {
		return "", fmt.Errorf("postgres: upsert reminder %s: %w", describeReminder(e.Grain, e.Name), err)
	}
	if err := t.ctxErr(ctx, "upsert", e.Grain, e.Name); err != nil {
		return "", err
	}
	gt, gk, name := reminderKey(e.Grain, e.Name)
	s, ns := splitTime(e.Start)
	var (
		version int64
		err     error
	)
	if e.Etag == "" {
		err = t.c.pool.QueryRow(ctx, t.sql.upsert, t.cluster, gt, gk, name,
			int16(reminder.BucketOf(reminder.Hash(e.Grain))), s, ns, int64(e.Period)).Scan(&version)
	} else {
		v, ok := parseEtag(e.Etag)
		if !ok {
			return "", t.conflict("upsert", e.Grain, e.Name, e.Etag)
		}
		err = t.c.pool.QueryRow(ctx, t.sql.upsertIf, t.cluster, gt, gk, name, s, ns, int64(e.Period), v).Scan(&version)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", t.conflict("upsert", e.Grain, e.Name, e.Etag)
	case err != nil:
		return "", t.callError(ctx, "upsert", describeReminder(e.Grain, e.Name), err)
	}
	return formatEtag(version), nil
}

// Remove deletes the reminder; with etag set, only if that is its current
// etag.
func (t *ReminderTable) Remove(ctx context.Context, id grain.ID, name, etag string) (bool, error) {
	if err := t.ctxErr(ctx, "remove", id, name); err != nil {
		return false, err
	}
	gt, gk, n := reminderKey(id, name)
	stmt, args := t.sql.remove, []any{t.cluster, gt, gk, n}
	if etag != "" {
		v, ok := parseEtag(etag)
		if !ok {
			return false, t.conflict("remove", id, name, etag)
		}
		stmt, args = t.sql.removeIf, append(args, v)
	}
	tag, err := t.c.pool.Exec(ctx, stmt, args...)
	if err != nil {
		return false, t.callError(ctx, "remove", describeReminder(id, name), err)
	}
	if tag.RowsAffected() == 0 && etag != "" {
		return false, t.conflict("remove", id, name, etag)
	}
	return tag.RowsAffected() > 0, nil
}

// Get returns one reminder with its current etag.
func (t *ReminderTable) Get(ctx context.Context, id grain.ID, name string) (reminder.Entry, bool, error) {
	if err := t.ctxErr(ctx, "get", id, name); err != nil {
		return reminder.Entry{}, false, err
	}
	gt, gk, n := reminderKey(id, name)
	var r row
	err := t.c.pool.QueryRow(ctx, t.sql.get, t.cluster, gt, gk, n).Scan(&r.startS, &r.startNs, &r.period, &r.version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return reminder.Entry{}, false, nil
	case err != nil:
		return reminder.Entry{}, false, t.callError(ctx, "get", describeReminder(id, name), err)
	}
	return r.entry(id, name), true, nil
}

// ListGrain returns the grain's reminders sorted by name, byte by byte.
func (t *ReminderTable) ListGrain(ctx context.Context, id grain.ID) ([]reminder.Entry, error) {
	what := "reminders of " + id.String()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list %s: %w", what, err)
	}
	rows, err := t.c.pool.Query(ctx, t.sql.listGrain, t.cluster, []byte(id.Type), []byte(id.Key))
	if err != nil {
		return nil, t.callError(ctx, "list", what, err)
	}
	var (
		name []byte
		r    row
	)
	es, err := pgx.CollectRows(rows, func(rows pgx.CollectableRow) (reminder.Entry, error) {
		if err := rows.Scan(&name, &r.startS, &r.startNs, &r.period, &r.version); err != nil {
			return reminder.Entry{}, err
		}
		return r.entry(id, string(name)), nil
	})
	if err != nil {
		return nil, t.callError(ctx, "list", what, err)
	}
	return es, nil
}

// ListBucket returns every reminder of bucket b: an index scan.
func (t *ReminderTable) ListBucket(ctx context.Context, b int) ([]reminder.Entry, error) {
	what := fmt.Sprintf("bucket %d", b)
	if err := checkBucket("list", b); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list %s: %w", what, err)
	}
	rows, err := t.c.pool.Query(ctx, t.sql.listBucket, t.cluster, int16(b))
	if err != nil {
		return nil, t.callError(ctx, "list", what, err)
	}
	var (
		gt, gk, name []byte
		r            row
	)
	es, err := pgx.CollectRows(rows, func(rows pgx.CollectableRow) (reminder.Entry, error) {
		if err := rows.Scan(&gt, &gk, &name, &r.startS, &r.startNs, &r.period, &r.version); err != nil {
			return reminder.Entry{}, err
		}
		return r.entry(grain.ID{Type: string(gt), Key: string(gk)}, string(name)), nil
	})
	if err != nil {
		return nil, t.callError(ctx, "list", what, err)
	}
	return es, nil
}

// SaveProgress records through as the progress of every given bucket whose
// progress is earlier, in one statement.
func (t *ReminderTable) SaveProgress(ctx context.Context, buckets []int, through time.Time) error {
	bs := make([]int16, 0, len(buckets))
	for _, b := range buckets {
		if err := checkBucket("save progress", b); err != nil {
			return err
		}
		bs = append(bs, int16(b))
	}
	slices.Sort(bs)
	bs = slices.Compact(bs)
	what := fmt.Sprintf("progress of buckets %v", bs)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: save %s: %w", what, err)
	}
	if len(bs) == 0 || through.IsZero() {
		return nil // nothing can move forwards
	}
	s, ns := splitTime(through)
	if _, err := t.c.pool.Exec(ctx, t.sql.saveProgress, t.cluster, bs, s, ns); err != nil {
		return t.callError(ctx, "save", what, err)
	}
	return nil
}

// LoadProgress returns the bucket's progress, or the zero time.
func (t *ReminderTable) LoadProgress(ctx context.Context, b int) (time.Time, error) {
	if err := checkBucket("load progress", b); err != nil {
		return time.Time{}, err
	}
	what := fmt.Sprintf("progress of bucket %d", b)
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("postgres: load %s: %w", what, err)
	}
	var (
		s  int64
		ns int32
	)
	err := t.c.pool.QueryRow(ctx, t.sql.loadProgress, t.cluster, int16(b)).Scan(&s, &ns)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, t.callError(ctx, "load", what, err)
	}
	return joinTime(s, ns), nil
}

// row holds the scanned columns of one reminder.
type row struct {
	startS  int64
	startNs int32
	period  int64
	version int64
}

func (r row) entry(id grain.ID, name string) reminder.Entry {
	return reminder.Entry{
		Grain:  id,
		Name:   name,
		Start:  joinTime(r.startS, r.startNs),
		Period: time.Duration(r.period),
		Etag:   formatEtag(r.version),
	}
}

// splitTime and joinTime store a time exactly, whatever its year: Unix
// seconds and nanoseconds. Times come back in UTC.
func splitTime(t time.Time) (int64, int32) { return t.Unix(), int32(t.Nanosecond()) }

func joinTime(s int64, ns int32) time.Time { return time.Unix(s, int64(ns)).UTC() }

// reminderKey returns the key columns as bytea: grain ids and names are Go
// strings, which PostgreSQL text cannot always hold, and bytea compares
// byte by byte, as the Table contract orders names.
func reminderKey(id grain.ID, name string) (grainType, grainKey, n []byte) {
	return []byte(id.Type), []byte(id.Key), []byte(name)
}

func describeReminder(id grain.ID, name string) string { return "reminder " + id.String() + "#" + name }

func checkBucket(op string, b int) error {
	if err := reminder.CheckBucket(b); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return nil
}

func (t *ReminderTable) ctxErr(ctx context.Context, op string, id grain.ID, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s %s: %w", op, describeReminder(id, name), err)
	}
	return nil
}

func (t *ReminderTable) conflict(op string, id grain.ID, name, etag string) error {
	t.log.Debug("etag conflict", zap.String("op", op), zap.Stringer("grain", id), zap.String("name", name), zap.String("etag", etag))
	return fmt.Errorf("postgres: %s %s: etag %q is not the reminder's current etag (it was changed or removed since, or never existed): %w",
		op, describeReminder(id, name), etag, reminder.ErrConflict)
}

func (t *ReminderTable) callError(ctx context.Context, op, what string, err error) error {
	err = callError(ctx, err)
	if isProgramLimit(err) {
		err = fmt.Errorf("%w: %w", reminder.ErrInvalid, err)
	}
	t.log.Debug("call failed", zap.String("op", op), zap.String("what", what), zap.String("server", t.c.where), zap.Error(err))
	return fmt.Errorf("postgres: %s %s (table %s, cluster %q, on %s): %w", op, what, t.sql.table, t.cluster, t.c.where, err)
}
