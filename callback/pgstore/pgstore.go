// Package pgstore is a callback.Store in PostgreSQL (github.com/jackc/pgx/v5), for receivers
// that outgrow one SQLite file: several receiver processes, on several hosts, may share one
// database, and each callback is still stored, and reported new, exactly once.
//
// It lives apart from package callback so that importing callback does not compile a database
// driver. pgx is the maintained native PostgreSQL driver for Go (database/sql's lib/pq is in
// maintenance mode); its pool and its binary protocol carry the batched inserts below.
//
// Saves are group-committed: concurrent Saves in one process share one transaction (one
// INSERT ... ON CONFLICT DO NOTHING over arrays, one counter update, one commit, one WAL
// flush). Across processes the primary key on the event id decides: an insert racing another
// transaction's uncommitted insert of the same event waits for it and then does nothing, so
// exactly one Save anywhere reports the callback new. The schema is versioned (see migrate.go)
// and upgraded in place by New under an advisory lock, so receivers may start together.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/internal/batch"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// maxBatch bounds how many Saves share one transaction.
const maxBatch = 256

// Config tunes a Store. Its zero value works.
type Config struct {
	// WriteTimeout bounds one group commit (insert, counters, commit). A Save waiting on a
	// commit that times out gets an error wrapping callback.ErrStore. Default 30s.
	WriteTimeout time.Duration
}

// Store is a callback.Store in PostgreSQL. When Save returns nil the callback is committed
// (durable as the server's synchronous_commit promises; on by default). It is safe for
// concurrent use, and any number of Stores in any number of processes may share one database.
// Call Close when done.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
	timeout  time.Duration
	saves    *batch.Committer[callback.Callback]
}

// New returns a Store on the caller's pool, creating or upgrading the schema first. Close
// stops the Store but leaves the pool open: the library never closes what it did not open.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pgstore: nil pool", callback.ErrInvalidConfig)
	}
	if cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("%w: pgstore: WriteTimeout %v < 0", callback.ErrInvalidConfig, cfg.WriteTimeout)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if _, err := migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("%w: pgstore: schema: %w", callback.ErrStore, err)
	}
	s := &Store{pool: pool, timeout: cfg.WriteTimeout}
	s.saves = batch.New(maxBatch, s.commitBatch)
	return s, nil
}

// Open connects to the database at url (a postgres:// URL or a key=value connection string as
// pgx reads them) and returns a Store that closes its pool on Close.
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may echo the URL with its password: keep only the error's kind.
		return nil, fmt.Errorf("%w: pgstore: cannot parse the database URL", callback.ErrInvalidConfig)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: connect: %w", callback.ErrStore, err)
	}
	s, err := New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownsPool = true
	return s, nil
}

// Close waits for pending Saves, then stops the Store (and closes the pool if Open opened it).
// Later calls return callback.ErrStoreClosed.
func (s *Store) Close() error {
	if err := s.saves.Close(); err != nil {
		return err
	}
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

// Save implements callback.Store. Concurrent Saves are group-committed (internal/batch).
func (s *Store) Save(ctx context.Context, cb callback.Callback) (bool, error) {
	return s.saves.Save(ctx, cb)
}

// commitBatch is commit within WriteTimeout.
func (s *Store) commitBatch(batch []callback.Callback) ([]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.commit(ctx, batch)
}

const (
	// insertSQL inserts the rows in the order of the arrays (WITH ORDINALITY ... ORDER BY).
	insertSQL = `INSERT INTO callbacks
	(event_id, task_id, celery_task_id, task_name, status, result, error, timestamp, attempt, received_at, body)
	SELECT e, t, c, n, s, r, er, ts, a, ra, b FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::bigint[], $10::bigint[], $11::text[])
		WITH ORDINALITY AS u(e, t, c, n, s, r, er, ts, a, ra, b, i)
	ORDER BY i
	ON CONFLICT (event_id) DO NOTHING
	RETURNING event_id`
	countSQL = `INSERT INTO callback_counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[])
	ON CONFLICT (name) DO UPDATE SET value = callback_counters.value + excluded.value`
)

// commit stores a batch in one transaction: the first Save of each event id in the batch is
// inserted unless the event is stored; every other Save counts as a duplicate. On any error
// nothing is committed.
func (s *Store) commit(ctx context.Context, batch []callback.Callback) (inserted []bool, err error) {
	var (
		first                                                        = map[string]int{} // event id → index of its first Save
		ids, tasks, celery, names, statuses, results, stamps, bodies []string
		errs                                                         []*string // NULL for no error
		attempts                                                     []int64
		received                                                     []int64
	)
	// In event id order: transactions of other processes inserting some of the same events
	// then wait on each other's rows in one order, never in a cycle (a deadlock).
	order := make([]int, len(batch))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(batch[a].EventID, batch[b].EventID) })
	for _, i := range order {
		cb := batch[i]
		if _, dup := first[cb.EventID]; dup {
			continue
		}
		first[cb.EventID] = i
		result := string(cb.Result)
		if result == "" {
			result = "null"
		}
		ids, tasks, celery, names = append(ids, cb.EventID), append(tasks, cb.TaskID), append(celery, cb.CeleryTaskID), append(names, cb.TaskName)
		statuses, results, stamps = append(statuses, string(cb.Status)), append(results, result), append(stamps, cb.Timestamp)
		errs = append(errs, cb.Error)
		attempts, received, bodies = append(attempts, int64(cb.Attempt)), append(received, cb.ReceivedAt.UnixNano()), append(bodies, string(cb.Body))
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: begin: %w", callback.ErrStore, err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit this does nothing; the error that matters is err
	rows, err := tx.Query(ctx, insertSQL, ids, tasks, celery, names, statuses, results, errs, stamps, attempts, received, bodies)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: insert %d events: %w", callback.ErrStore, len(ids), err)
	}
	stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: insert %d events: %w", callback.ErrStore, len(ids), err)
	}
	inserted = make([]bool, len(batch))
	for _, id := range stored {
		inserted[first[id]] = true
	}
	counts := map[string]int64{}
	for i, cb := range batch {
		if inserted[i] {
			counts["status:"+string(cb.Status)]++
		} else {
			counts["duplicates"]++
		}
	}
	// Sorted, so that concurrent transactions lock the counter rows in one order (no deadlock).
	cnames := slices.Sorted(func(yield func(string) bool) {
		for n := range counts {
			if !yield(n) {
				return
			}
		}
	})
	cvalues := make([]int64, len(cnames))
	for i, n := range cnames {
		cvalues[i] = counts[n]
	}
	if _, err := tx.Exec(ctx, countSQL, cnames, cvalues); err != nil {
		return nil, fmt.Errorf("%w: pgstore: count: %w", callback.ErrStore, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("%w: pgstore: commit: %w", callback.ErrStore, err)
	}
	return inserted, nil
}

// Seen implements callback.Store.
func (s *Store) Seen(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM callbacks WHERE event_id = $1`, eventID).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: pgstore: look up event %s: %w", callback.ErrStore, eventID, err)
	}
	return true, nil
}

// byTaskIDSQL finds a task's callbacks through the task_id index and the partial celery_task_id
// index (the <> ” arm lets the planner use it).
const byTaskIDSQL = `SELECT event_id, task_id, celery_task_id, task_name, status, result, error, timestamp,
	attempt, received_at, body FROM callbacks
	WHERE task_id = $1 OR (celery_task_id = $1 AND celery_task_id <> '')
	ORDER BY received_at, seq`

// ByTaskID implements callback.Store.
func (s *Store) ByTaskID(ctx context.Context, taskID string) ([]callback.Callback, error) {
	if taskID == "" {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, byTaskIDSQL, taskID)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: query task %s: %w", callback.ErrStore, taskID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (callback.Callback, error) {
		var (
			cb             callback.Callback
			status, result string
			body           string
			errText        *string
			received       int64
			attempt        int64
		)
		if err := row.Scan(&cb.EventID, &cb.TaskID, &cb.CeleryTaskID, &cb.TaskName, &status, &result, &errText,
			&cb.Timestamp, &attempt, &received, &body); err != nil {
			return cb, err
		}
		cb.Status, cb.Result, cb.Body, cb.Error = callback.Status(status), []byte(result), []byte(body), errText
		cb.Attempt, cb.ReceivedAt = int(attempt), time.Unix(0, received)
		return cb, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: read task %s: %w", callback.ErrStore, taskID, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Stats implements callback.Store. It reads the counters, not the rows.
func (s *Store) Stats(ctx context.Context) (callback.StoreStats, error) {
	st := callback.StoreStats{ByStatus: map[callback.Status]int64{}}
	rows, err := s.pool.Query(ctx, `SELECT name, value FROM callback_counters`)
	if err != nil {
		return st, fmt.Errorf("%w: pgstore: stats: %w", callback.ErrStore, err)
	}
	var name string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		if status, ok := strings.CutPrefix(name, "status:"); ok {
			if n > 0 {
				st.ByStatus[callback.Status(status)] = n
			}
			st.Unique += n
		} else if name == "duplicates" {
			st.Duplicates = n
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("%w: pgstore: stats: %w", callback.ErrStore, err)
	}
	st.Received = st.Unique + st.Duplicates
	return st, nil
}
