// Package sqlitestore is a callback.Store in an SQLite database file (modernc.org/sqlite, pure
// Go, no cgo). It lives apart from package callback so that importing callback does not compile
// SQLite; import it where the receiver's store is chosen.
//
// The store group-commits: concurrent Saves share one transaction and one fsync
// (synchronous=FULL, WAL), so a Save that returned nil is on disk. Its schema (version 2,
// upgraded in place from version 1) keeps counters beside the rows, so Stats does not scan, and
// leaves out of the Celery-id index the rows found by Celery id through another index (tasks
// without a business id, callbacks without a Celery id, and event ids derived from the Celery
// id by older senders): random Celery ids made that index cost as much as the rest of the row
// to write.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/internal/batch"
	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// sqliteSchema is the store's schema (PRAGMA user_version 2).
//
//	callbacks: one row per event id (unique index), result/body as JSON text, received_at in
//	           Unix nanoseconds. derived is 1 when ByTaskID finds the row by its Celery id
//	           without the celery_task_id index (see findableWithoutCeleryIndex), so only the
//	           other rows are in that index: random Celery ids made it cost as much as the
//	           rest of the row to write.
//	callback_counters: name → value; "duplicates" counts suppressed duplicates and
//	           "status:<status>" the stored callbacks of each status, kept in the same
//	           transactions as the rows, so Stats costs the same for ten rows or ten million.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS callbacks (
	event_id       TEXT    NOT NULL,
	task_id        TEXT    NOT NULL,
	celery_task_id TEXT    NOT NULL DEFAULT '',
	task_name      TEXT    NOT NULL DEFAULT '',
	status         TEXT    NOT NULL,
	result         TEXT    NOT NULL DEFAULT 'null',
	error          TEXT,
	timestamp      TEXT    NOT NULL DEFAULT '',
	attempt        INTEGER NOT NULL DEFAULT 0,
	received_at    INTEGER NOT NULL,
	body           TEXT    NOT NULL,
	derived        INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS callbacks_event_id ON callbacks (event_id);
CREATE INDEX IF NOT EXISTS callbacks_task_id ON callbacks (task_id);
CREATE INDEX IF NOT EXISTS callbacks_celery_task_id_other ON callbacks (celery_task_id) WHERE derived = 0;
CREATE TABLE IF NOT EXISTS callback_counters (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
PRAGMA user_version = 2;
`

// sqliteMigrateV1 brings a version 1 database to version 2.
const sqliteMigrateV1 = `
ALTER TABLE callbacks ADD COLUMN derived INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS callbacks_celery_task_id;
CREATE INDEX IF NOT EXISTS callbacks_celery_task_id_other ON callbacks (celery_task_id) WHERE derived = 0;
INSERT INTO callback_counters (name, value)
	SELECT 'status:' || status, COUNT(*) FROM callbacks WHERE true GROUP BY status
	ON CONFLICT (name) DO UPDATE SET value = excluded.value;
PRAGMA user_version = 2;
`

const (
	sqliteInsert = `INSERT INTO callbacks
	(event_id, task_id, celery_task_id, task_name, status, result, error, timestamp, attempt, received_at, body, derived)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (event_id) DO NOTHING`
	sqliteCount = `INSERT INTO callback_counters (name, value) VALUES (?, ?)
	ON CONFLICT (name) DO UPDATE SET value = value + excluded.value`
	// sqliteByTaskID takes the id, then EventID(id, "success") and EventID(id, "failed").
	sqliteByTaskID = ` WHERE rowid IN (
		SELECT rowid FROM callbacks WHERE task_id = ?1
		UNION SELECT rowid FROM callbacks WHERE derived = 0 AND celery_task_id = ?1
		UNION SELECT rowid FROM callbacks WHERE event_id IN (?2, ?3) AND celery_task_id = ?1
	) ORDER BY received_at, rowid`
	sqliteSelect = `SELECT event_id, task_id, celery_task_id, task_name, status, result, error, timestamp,
	attempt, received_at, body FROM callbacks`
)

// sqliteMaxBatch bounds how many Saves share one transaction.
const sqliteMaxBatch = 256

// Store is a callback.Store in an SQLite database file (modernc.org/sqlite, no cgo). It uses WAL
// mode with synchronous=FULL: when Save returns nil the row is on disk. Concurrent Saves are
// group-committed: one writer goroutine inserts everything waiting in one transaction, so the
// cost of the fsync is shared. Callbacks survive a restart of the receiver. It is safe for
// concurrent use; call Close when done.
type Store struct {
	w, r   *sql.DB // w: the single writer connection; r: readers (WAL lets them run alongside)
	insert *sql.Stmt
	saves  *batch.Committer[callback.Callback]
}

// New opens (creating if needed) the database file at path.
func New(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("%w: SQLite path %q: need a file path without '?' or '#' (use callback.NewMemoryStore for memory)", callback.ErrInvalidConfig, path)
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", callback.ErrStore, path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := sqliteMigrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("%w: schema of %s: %w", callback.ErrStore, path, err)
	}
	insert, err := w.PrepareContext(ctx, sqliteInsert)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("%w: prepare insert in %s: %w", callback.ErrStore, path, err)
	}
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("%w: open %s: %w", callback.ErrStore, path, err)
	}
	r.SetMaxOpenConns(4)
	s := &Store{w: w, r: r, insert: insert}
	s.saves = batch.New(sqliteMaxBatch, s.commit)
	return s, nil
}

// sqliteMigrate creates the schema in a new database or brings an older one up to date.
func sqliteMigrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	var script string
	switch version {
	case 0:
		script = sqliteSchema
	case 1:
		script = sqliteMigrateV1
	case 2:
		return nil
	default:
		return fmt.Errorf("schema version %d is newer than this program knows (2)", version)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // after Commit this does nothing
	if _, err := tx.ExecContext(ctx, script); err != nil {
		return fmt.Errorf("upgrade from version %d: %w", version, err)
	}
	return tx.Commit()
}

// Close waits for pending Saves, then closes the database. Later calls return
// callback.ErrStoreClosed.
func (s *Store) Close() error {
	if err := s.saves.Close(); err != nil {
		return err
	}
	return errors.Join(s.insert.Close(), s.w.Close(), s.r.Close())
}

// Save implements callback.Store. Concurrent Saves are group-committed (internal/batch).
func (s *Store) Save(ctx context.Context, cb callback.Callback) (bool, error) {
	return s.saves.Save(ctx, cb)
}

// commit inserts a batch in one transaction. On any error nothing is committed.
func (s *Store) commit(batch []callback.Callback) (inserted []bool, err error) {
	ctx := context.Background()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: begin: %w", callback.ErrStore, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that matters is err
		}
	}()
	stmt := tx.StmtContext(ctx, s.insert)
	inserted = make([]bool, len(batch))
	counts := map[string]int{} // counter name → increment
	for i, cb := range batch {
		var errText any
		if cb.Error != nil {
			errText = *cb.Error
		}
		result := string(cb.Result)
		if result == "" {
			result = "null"
		}
		derived := findableWithoutCeleryIndex(cb)
		res, err := stmt.ExecContext(ctx, cb.EventID, cb.TaskID, cb.CeleryTaskID, cb.TaskName, string(cb.Status),
			result, errText, cb.Timestamp, cb.Attempt, cb.ReceivedAt.UnixNano(), string(cb.Body), derived)
		if err != nil {
			return nil, fmt.Errorf("%w: insert event %s: %w", callback.ErrStore, cb.EventID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("%w: insert event %s: %w", callback.ErrStore, cb.EventID, err)
		}
		inserted[i] = n == 1
		if n == 0 {
			counts["duplicates"]++
		} else {
			counts["status:"+string(cb.Status)]++
		}
	}
	for name, n := range counts {
		if _, err := tx.ExecContext(ctx, sqliteCount, name, n); err != nil {
			return nil, fmt.Errorf("%w: count %s: %w", callback.ErrStore, name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%w: commit: %w", callback.ErrStore, err)
	}
	return inserted, nil
}

// findableWithoutCeleryIndex reports whether ByTaskID finds cb by its Celery id through the
// task_id or event_id index, so that its row may stay out of the celery_task_id index (the
// column "derived"). That holds when it has no Celery id, when its Celery id is its task_id (a
// task without a business id: the sender sends the Celery id as "task_id"), and when its event
// id is EventID(Celery id, status), as senders made it before event ids were derived from
// "task_id". A callback with a business id and an event id derived from it (this module's
// sender now) needs the index.
func findableWithoutCeleryIndex(cb callback.Callback) bool {
	return cb.CeleryTaskID == "" || cb.CeleryTaskID == cb.TaskID ||
		cb.EventID == callback.EventID(cb.CeleryTaskID, string(cb.Status))
}

// Seen implements callback.Store.
func (s *Store) Seen(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM callbacks WHERE event_id = ?`, eventID).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: look up event %s: %w", callback.ErrStore, eventID, err)
	}
	return true, nil
}

// ByTaskID implements callback.Store.
func (s *Store) ByTaskID(ctx context.Context, taskID string) ([]callback.Callback, error) {
	if taskID == "" {
		return nil, nil
	}
	// Each arm uses an index: task_id (which also finds rows whose Celery id is their task_id);
	// celery_task_id for the rows in that index; and for rows whose event id was derived from
	// their Celery id, the two event ids it can have.
	rows, err := s.r.QueryContext(ctx, sqliteSelect+sqliteByTaskID, taskID, callback.EventID(taskID, string(callback.StatusSuccess)), callback.EventID(taskID, string(callback.StatusFailed)))
	if err != nil {
		return nil, fmt.Errorf("%w: query task %s: %w", callback.ErrStore, taskID, err)
	}
	defer rows.Close()
	var out []callback.Callback
	for rows.Next() {
		var (
			cb       callback.Callback
			status   string
			result   string
			errText  sql.NullString
			received int64
			body     string
		)
		if err := rows.Scan(&cb.EventID, &cb.TaskID, &cb.CeleryTaskID, &cb.TaskName, &status, &result, &errText,
			&cb.Timestamp, &cb.Attempt, &received, &body); err != nil {
			return nil, fmt.Errorf("%w: read task %s: %w", callback.ErrStore, taskID, err)
		}
		cb.Status, cb.Result, cb.Body = callback.Status(status), []byte(result), []byte(body)
		if errText.Valid {
			cb.Error = &errText.String
		}
		cb.ReceivedAt = time.Unix(0, received)
		out = append(out, cb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: read task %s: %w", callback.ErrStore, taskID, err)
	}
	return out, nil
}

// Stats implements callback.Store. It reads the counters, not the rows.
func (s *Store) Stats(ctx context.Context) (callback.StoreStats, error) {
	st := callback.StoreStats{ByStatus: map[callback.Status]int64{}}
	rows, err := s.r.QueryContext(ctx, `SELECT name, value FROM callback_counters`)
	if err != nil {
		return st, fmt.Errorf("%w: stats: %w", callback.ErrStore, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return st, fmt.Errorf("%w: stats: %w", callback.ErrStore, err)
		}
		if status, ok := strings.CutPrefix(name, "status:"); ok {
			if n > 0 {
				st.ByStatus[callback.Status(status)] = n
			}
			st.Unique += n
		} else if name == "duplicates" {
			st.Duplicates = n
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("%w: stats: %w", callback.ErrStore, err)
	}
	st.Received = st.Unique + st.Duplicates
	return st, nil
}
