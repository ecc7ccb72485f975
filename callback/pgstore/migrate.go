package pgstore

import (
	"context"
	"fmt"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema's versions, in order: migrations[i] brings a database from version
// i to version i+1. A released migration is never edited; a change is a new one appended.
//
// Version 1:
//
//	callbacks: one row per event id (primary key), result and body as the JSON text received
//	           (text, not jsonb, so a stored callback reads back byte for byte),
//	           received_at in Unix nanoseconds (timestamptz keeps only microseconds), seq
//	           orders callbacks received in the same nanosecond.
//	callback_counters: name → value; "duplicates" counts suppressed duplicates and
//	           "status:<status>" the stored callbacks of each status, updated in the same
//	           transactions as the rows, so Stats costs the same for ten rows or ten million.
var migrations = []string{
	`CREATE TABLE callbacks (
		event_id       text    PRIMARY KEY,
		seq            bigint  GENERATED ALWAYS AS IDENTITY,
		task_id        text    NOT NULL,
		celery_task_id text    NOT NULL DEFAULT '',
		task_name      text    NOT NULL DEFAULT '',
		status         text    NOT NULL,
		result         text    NOT NULL DEFAULT 'null',
		error          text,
		timestamp      text    NOT NULL DEFAULT '',
		attempt        bigint  NOT NULL DEFAULT 0,
		received_at    bigint  NOT NULL,
		body           text    NOT NULL
	);
	CREATE INDEX callbacks_task_id ON callbacks (task_id);
	CREATE INDEX callbacks_celery_task_id ON callbacks (celery_task_id) WHERE celery_task_id <> '';
	CREATE TABLE callback_counters (
		name  text   PRIMARY KEY,
		value bigint NOT NULL
	);`,
}

// migrationLock is the pg_advisory_xact_lock key that serializes migrations of one database
// across processes: two receivers starting at once must not both create the tables.
const migrationLock = 0x63616c6c6261636b // "callback"

// migrate brings the database to the newest version, one transaction per version, holding the
// advisory lock so that concurrent starts apply each version once. It returns the version the
// database is at.
func migrate(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	for {
		version, done, err := migrateOne(ctx, pool)
		if err != nil || done {
			return version, err
		}
	}
}

// migrateOne applies the next migration, if any, in one transaction under the lock.
func migrateOne(ctx context.Context, pool *pgxpool.Pool) (version int, done bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit this does nothing
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return 0, false, fmt.Errorf("lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS callback_schema_version (
		version    integer     PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return 0, false, fmt.Errorf("create callback_schema_version: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM callback_schema_version`).Scan(&version); err != nil {
		return 0, false, fmt.Errorf("read version: %w", err)
	}
	switch {
	case version > len(migrations):
		return version, false, fmt.Errorf("schema version %d is newer than this program knows (%d)", version, len(migrations))
	case version == len(migrations):
		return version, true, nil
	}
	if _, err := tx.Exec(ctx, migrations[version]); err != nil {
		return version, false, fmt.Errorf("upgrade from version %d: %w", version, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO callback_schema_version (version) VALUES ($1)`, version+1); err != nil {
		return version, false, fmt.Errorf("record version %d: %w", version+1, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return version, false, fmt.Errorf("commit version %d: %w", version+1, err)
	}
	return version + 1, false, nil
}

// Version returns the schema version of the database behind s.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM callback_schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("%w: read schema version: %w", callback.ErrStore, err)
	}
	return v, nil
}
