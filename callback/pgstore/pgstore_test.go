package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/storetest"
	"github.com/google/go-cmp/cmp"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) callback.Store {
		s, _ := newStore(t)
		return s
	})
}

// TestMigrations: a new database is brought to the newest version once, even by several
// stores starting together; reopening changes nothing and keeps the rows; a database newer
// than the program is refused, not written to.
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	url := newDatabase(t)
	pool := newPool(t, url)
	var wg sync.WaitGroup
	stores := make([]*Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = New(ctx, pool, Config{}) })
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("New #%d: %v", i, errs[i])
		}
		defer s.Close()
	}
	var rows, version int
	if err := pool.QueryRow(ctx, `SELECT count(*), max(version) FROM callback_schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || version != len(migrations) {
		t.Errorf("callback_schema_version has %d rows up to version %d; want each of %d versions once", rows, version, len(migrations))
	}
	cb := callback.Callback{EventID: "e1", TaskID: "t1", Status: callback.StatusSuccess, Body: json.RawMessage(`{}`)}
	if ok, err := stores[0].Save(ctx, cb); !ok || err != nil {
		t.Fatalf("Save = %v, %v", ok, err)
	}
	again, err := New(ctx, pool, Config{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer again.Close()
	if v, err := again.Version(ctx); err != nil || v != len(migrations) {
		t.Errorf("Version = %d, %v; want %d", v, err, len(migrations))
	}
	if seen, err := again.Seen(ctx, "e1"); !seen || err != nil {
		t.Errorf("Seen(e1) after reopen = %v, %v", seen, err)
	}

	if _, err := pool.Exec(ctx, `INSERT INTO callback_schema_version (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, pool, Config{}); !errors.Is(err, callback.ErrStore) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("New on a version 99 database = %v; want ErrStore saying it is newer", err)
	}
}

// TestSurvivesRestart: what one Store saved, concurrently and with duplicates, a new Store on
// the same database finds; a closed Store refuses Saves.
func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	s, url := newStore(t)
	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := callback.Callback{EventID: fmt.Sprint("e", i%(n/2)), TaskID: fmt.Sprint("t", i%(n/2)),
				Status: callback.StatusSuccess, Result: json.RawMessage(`null`), ReceivedAt: time.Now(), Body: json.RawMessage(`{}`)}
			if _, err := s.Save(ctx, c); err != nil {
				t.Errorf("Save: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Save(ctx, callback.Callback{EventID: "x"}); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("Save after Close = %v, want ErrStoreClosed", err)
	}
	if err := s.Close(); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("second Close = %v, want ErrStoreClosed", err)
	}
	s2, err := Open(ctx, url, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	want := callback.StoreStats{Received: n, Unique: n / 2, Duplicates: n / 2, ByStatus: map[callback.Status]int64{callback.StatusSuccess: n / 2}}
	if st, err := s2.Stats(ctx); err != nil || !cmp.Equal(want, st) {
		t.Errorf("Stats after reopen = %+v, %v; want %+v", st, err, want)
	}
	if ins, err := s2.Save(ctx, callback.Callback{EventID: "e7", TaskID: "t7", Status: callback.StatusSuccess}); err != nil || ins {
		t.Errorf("Save of a stored event after reopen = %v, %v; want duplicate", ins, err)
	}
}

// TestBatchDuplicates: one group commit holding a repeat of its own event and one already
// stored inserts each event once and reports the rest as duplicates.
func TestBatchDuplicates(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mk := func(id string) callback.Callback {
		return callback.Callback{EventID: id, TaskID: "t-" + id, Status: callback.StatusSuccess, Body: json.RawMessage(`{}`)}
	}
	if ok, err := s.Save(ctx, mk("old")); !ok || err != nil {
		t.Fatal(ok, err)
	}
	var batch []callback.Callback
	var want []bool
	for i := range 70 {
		batch = append(batch, mk(fmt.Sprint("e", i)))
		want = append(want, true)
	}
	batch = append(batch, mk("e3"), mk("old"), mk("e69"))
	want = append(want, false, false, false)
	got, err := s.commit(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(want, got) {
		t.Errorf("inserted %v\nwant     %v", got, want)
	}
	wantSt := callback.StoreStats{Received: 74, Unique: 71, Duplicates: 3, ByStatus: map[callback.Status]int64{callback.StatusSuccess: 71}}
	if st, err := s.Stats(ctx); err != nil || !cmp.Equal(wantSt, st) {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, wantSt)
	}
}

// TestErrors: a bad config or URL is ErrInvalidConfig (without echoing the password), an
// unreachable server and a lost pool are ErrStore; nothing panics and no Save is reported
// stored when it is not.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, nil, Config{}); !errors.Is(err, callback.ErrInvalidConfig) {
		t.Errorf("New(nil pool) = %v, want ErrInvalidConfig", err)
	}
	if _, err := Open(ctx, "postgres://u:s3cret@[::1:5432/x", Config{}); !errors.Is(err, callback.ErrInvalidConfig) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open(bad URL) = %v, want ErrInvalidConfig without the password", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := Open(tctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=2", port), Config{}); !errors.Is(err, callback.ErrStore) {
		t.Errorf("Open(nothing listening) = %v, want ErrStore", err)
	}

	url := newDatabase(t)
	pool := newPool(t, url)
	if _, err := New(ctx, pool, Config{WriteTimeout: -1}); !errors.Is(err, callback.ErrInvalidConfig) {
		t.Errorf("New(WriteTimeout -1) = %v, want ErrInvalidConfig", err)
	}
	s, err := New(ctx, pool, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool.Close() // the database goes away under the store
	cb := callback.Callback{EventID: "e1", TaskID: "t1", Status: callback.StatusSuccess, Body: json.RawMessage(`{}`)}
	if ok, err := s.Save(ctx, cb); ok || !errors.Is(err, callback.ErrStore) {
		t.Errorf("Save on a closed pool = %v, %v; want false, ErrStore", ok, err)
	}
	if _, err := s.Seen(ctx, "e1"); !errors.Is(err, callback.ErrStore) {
		t.Errorf("Seen on a closed pool = %v, want ErrStore", err)
	}
	if _, err := s.ByTaskID(ctx, "t1"); !errors.Is(err, callback.ErrStore) {
		t.Errorf("ByTaskID on a closed pool = %v, want ErrStore", err)
	}
	if _, err := s.Stats(ctx); !errors.Is(err, callback.ErrStore) {
		t.Errorf("Stats on a closed pool = %v, want ErrStore", err)
	}
}

// TestLookupsCanUseIndexes: ByTaskID's query can be answered from the task_id and the partial
// celery_task_id index, also in the generic plan a prepared statement ends up with (with
// sequential scans disabled the planner finds a plan without one).
func TestLookupsCanUseIndexes(t *testing.T) {
	ctx := context.Background()
	url := newDatabase(t)
	pool := newPool(t, url)
	s, err := New(ctx, pool, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `PREPARE by_task(text) AS `+byTaskIDSQL); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE by_task('x')`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(plan, "\n")
	if strings.Contains(joined, "Seq Scan") {
		t.Errorf("query plan scans the table:\n%s", joined)
	}
	for _, ix := range []string{"callbacks_task_id", "callbacks_celery_task_id"} {
		if !strings.Contains(joined, ix) {
			t.Errorf("query plan does not use %s:\n%s", ix, joined)
		}
	}
}
