// Package postgres keeps grain state and reminders in PostgreSQL, through
// a pgx connection pool: Provider is a storage.Provider (and a
// storage.Limiter) for production volumes and value sizes, ReminderTable a
// reminder.Table. Both pass their conformance suites (storagetest,
// remindertest); package pgtest gives tests a database to run them on.
//
//	p, err := postgres.New(ctx, postgres.Config{DSN: "postgres://granary@db:5432/granary"})
//	if err != nil { ... }
//	defer p.Close()
//	etag, err := p.Write(ctx, k, data, etag)
//
//	// One pool can serve both.
//	cfg, err := postgres.ParsePoolConfig(dsn)
//	pool, err := pgxpool.NewWithConfig(ctx, cfg)
//	p, err := postgres.New(ctx, postgres.Config{Pool: pool})
//	reminders, err := postgres.NewReminderTable(ctx, postgres.ReminderConfig{Pool: pool, Cluster: "prod"})
//
// # Schema
//
// New and NewReminderTable create their tables if they do not exist (see
// Migrate; Config.SkipMigrate turns this off), in one transaction that
// holds an advisory lock, so silos starting together do not race. The state
// table, "granary_state" by default:
//
//	CREATE SEQUENCE granary_state_version AS bigint;
//	CREATE TABLE granary_state (
//		grain_type bytea NOT NULL,
//		grain_key  bytea NOT NULL,
//		state      bytea NOT NULL,
//		version    bigint NOT NULL, -- the etag, from the sequence
//		data       bytea NOT NULL,
//		PRIMARY KEY (grain_type, grain_key, state)
//	) WITH (fillfactor = 90);
//
// Key components are bytea because a Go string may hold bytes (NUL,
// invalid UTF-8) that text cannot. The reminder table, "granary_reminders"
// by default, is keyed by (cluster, grain_type, grain_key, name), keeps the
// grain's reminder.Hash and bucket in columns with an index on (cluster,
// bucket) for ListBucket, and Start exactly (Unix seconds and nanoseconds);
// its progress table is "granary_reminders_progress".
//
// # Etags and round trips
//
// An etag is the decimal version of the record. Every write takes a new
// version from the table's sequence, so an etag is never issued twice, not
// even for a record cleared and created again. Each call is one statement,
// one round trip, with no transaction around it (pgx prepares a statement
// the first time a connection runs it, which costs one more): a read is a
// SELECT; a write with etag "" an INSERT ... ON CONFLICT DO NOTHING
// RETURNING, any other write an UPDATE ... WHERE version = $etag
// RETURNING; a Clear a DELETE ... WHERE version = $etag (with etag "", a
// SELECT EXISTS). No row back means the etag was stale:
// storage.ErrConflict. An etag that is not a version this package could
// have issued fails with ErrConflict without a round trip.
//
// # Contexts and failures
//
// Every call is bounded by its context, and an ended context's error is
// wrapped in the call's error. On a pool that New creates from a DSN, a
// call whose context ends while its statement runs has the server cancel
// the statement: the call returns the statement's real outcome, unless the
// server does not answer within a second and the connection is dropped.
// Build a pool you pass in Config.Pool with ParsePoolConfig to have the
// same. Errors that are
// not about the context say which call, key, table and server failed; as
// with any database, a write that failed because the connection was lost
// may or may not have been applied. pgx connects lazily and reconnects
// after a server restart on its own.
package postgres
