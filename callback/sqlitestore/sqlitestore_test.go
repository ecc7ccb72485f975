package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/storetest"
	"github.com/google/go-cmp/cmp"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) callback.Store { return newSQLite(t, "") })
}

func TestSQLiteStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cb.db")
	s := newSQLite(t, path)
	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { // concurrent Saves share transactions
			defer wg.Done()
			c := callback.Callback{EventID: fmt.Sprint("e", i%(n/2)), TaskID: fmt.Sprint("t", i%(n/2)), Status: callback.StatusSuccess,
				Result: json.RawMessage(`null`), ReceivedAt: time.Now(), Body: json.RawMessage(`{}`)}
			if _, err := s.Save(ctx, c); err != nil {
				t.Errorf("Save: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Save(ctx, callback.Callback{EventID: "x"}); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("Save after Close = %v, want callback.ErrStoreClosed", err)
	}
	if err := s.Close(); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("second Close = %v, want callback.ErrStoreClosed", err)
	}

	s2 := newSQLite(t, path)
	stats, err := s2.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := callback.StoreStats{Received: n, Unique: n / 2, Duplicates: n / 2, ByStatus: map[callback.Status]int64{callback.StatusSuccess: n / 2}}
	if diff := cmp.Diff(want, stats); diff != "" {
		t.Errorf("Stats after reopen (-want +got):\n%s", diff)
	}
	if ins, err := s2.Save(ctx, callback.Callback{EventID: "e7", TaskID: "t7", Status: callback.StatusSuccess}); err != nil || ins {
		t.Errorf("Save of a stored event after reopen = %v, %v; want duplicate", ins, err)
	}
}

func TestNewBadPath(t *testing.T) {
	for _, p := range []string{"", ":memory:", "/tmp/x.db?mode=ro"} {
		if _, err := New(context.Background(), p); !errors.Is(err, callback.ErrInvalidConfig) {
			t.Errorf("New(%q) = %v, want callback.ErrInvalidConfig", p, err)
		}
	}
	if _, err := New(context.Background(), filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")); !errors.Is(err, callback.ErrStore) {
		t.Errorf("New in a missing dir = %v, want callback.ErrStore", err)
	}
}

// sqliteSchemaV1 is the schema as version 1 created it.
const sqliteSchemaV1 = `
CREATE TABLE callbacks (
	event_id TEXT NOT NULL, task_id TEXT NOT NULL, celery_task_id TEXT NOT NULL DEFAULT '',
	task_name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL, result TEXT NOT NULL DEFAULT 'null',
	error TEXT, timestamp TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL DEFAULT 0,
	received_at INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE UNIQUE INDEX callbacks_event_id ON callbacks (event_id);
CREATE INDEX callbacks_task_id ON callbacks (task_id);
CREATE INDEX callbacks_celery_task_id ON callbacks (celery_task_id);
CREATE TABLE callback_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
PRAGMA user_version = 1;
INSERT INTO callbacks (event_id, task_id, celery_task_id, status, received_at, body)
	VALUES ('custom-1', 'biz-1', 'c-1', 'success', 1, '{}');
`

// TestSQLiteStoreUpgradesV1: a database written by version 1 of the schema opens, keeps its
// rows findable by Celery id, and takes new ones.
func TestSQLiteStoreUpgradesV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, sqliteSchemaV1); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := newSQLite(t, path)
	var version int
	if err := s.r.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil || version != 2 {
		t.Fatalf("user_version = %d, %v; want 2", version, err)
	}
	cb := callback.Callback{EventID: callback.EventID("c-1", "failed"), TaskID: "biz-1", CeleryTaskID: "c-1", Status: callback.StatusFailed,
		ReceivedAt: time.Unix(2, 0), Body: json.RawMessage(`{}`)}
	if ok, err := s.Save(ctx, cb); !ok || err != nil {
		t.Fatalf("Save = %v, %v", ok, err)
	}
	got, err := s.ByTaskID(ctx, "c-1")
	if err != nil || len(got) != 2 || got[0].EventID != "custom-1" || got[1].EventID != cb.EventID {
		t.Fatalf("ByTaskID(c-1) = %+v, %v; want the v1 row, then the new one", got, err)
	}
	// The counters Stats reads were filled from the v1 rows by the upgrade.
	want := callback.StoreStats{Received: 2, Unique: 2, ByStatus: map[callback.Status]int64{callback.StatusSuccess: 1, callback.StatusFailed: 1}}
	if st, err := s.Stats(ctx); err != nil || !cmp.Equal(want, st) {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, want)
	}
	s.Close()
	if _, err := New(ctx, path); err != nil { // reopening at version 2 changes nothing
		t.Fatalf("reopen: %v", err)
	}
}

// TestSQLiteLookupsUseIndexes: ByTaskID never scans the table, whichever kind of id it gets.
func TestSQLiteLookupsUseIndexes(t *testing.T) {
	s := newSQLite(t, "")
	rows, err := s.r.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+sqliteSelect+sqliteByTaskID, "x", "y", "z")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	joined := strings.Join(plan, "\n")
	for _, d := range plan {
		if strings.HasPrefix(d, "SCAN callbacks") && !strings.Contains(d, "INDEX") {
			t.Errorf("query plan scans the table:\n%s", joined)
		}
	}
	for _, ix := range []string{"callbacks_task_id", "callbacks_celery_task_id_other", "callbacks_event_id"} {
		if !strings.Contains(joined, ix) {
			t.Errorf("query plan does not use %s:\n%s", ix, joined)
		}
	}
}

// TestSQLiteBatchDuplicates: one group commit holding a repeat of its own event and one already
// stored inserts each event once and counts the rest as duplicates, across statement chunks.
func TestSQLiteBatchDuplicates(t *testing.T) {
	ctx := context.Background()
	s := newSQLite(t, "")
	mk := func(id string) callback.Callback {
		return callback.Callback{EventID: id, TaskID: "t-" + id, Status: callback.StatusSuccess, Body: json.RawMessage(`{}`)}
	}
	if ok, err := s.Save(ctx, mk("old")); !ok || err != nil {
		t.Fatal(ok, err)
	}
	var batch []callback.Callback
	want := []bool{}
	for i := range 70 {
		batch = append(batch, mk(fmt.Sprint("e", i)))
		want = append(want, true)
	}
	batch = append(batch, mk("e3"), mk("old"), mk("e69"))
	want = append(want, false, false, false)
	got, err := s.commit(batch)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(want, got) {
		t.Errorf("inserted %v\nwant     %v", got, want)
	}
	st, err := s.Stats(ctx)
	if wantSt := (callback.StoreStats{Received: 74, Unique: 71, Duplicates: 3, ByStatus: map[callback.Status]int64{callback.StatusSuccess: 71}}); err != nil || !cmp.Equal(wantSt, st) {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, wantSt)
	}
}

// newSQLite opens a store in the test's temp dir (or at path) and closes it at the end.
func newSQLite(t testing.TB, path string) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "callbacks.db")
	}
	s, err := New(context.Background(), path)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() }) // may be closed by the test already
	return s
}

// TestSQLiteCeleryIndexHoldsOnlyWhatNeedsIt: the callbacks each sender makes are all found by
// Celery id, and only those that need it are in the celery_task_id index: since event ids are
// derived from "task_id", a callback whose Celery id is its task_id (no business id), or that
// has no Celery id (the original Python sender), is found through the task_id index.
func TestSQLiteCeleryIndexHoldsOnlyWhatNeedsIt(t *testing.T) {
	ctx := context.Background()
	s := newSQLite(t, "")
	mk := func(event, task, celery string) callback.Callback {
		return callback.Callback{EventID: event, TaskID: task, CeleryTaskID: celery, Status: callback.StatusSuccess,
			Body: json.RawMessage(`{}`)}
	}
	ok := string(callback.StatusSuccess)
	cbs := map[string]struct {
		cb        callback.Callback
		needIndex bool
	}{
		"business id":     {mk(callback.EventID("biz-1", ok), "biz-1", "c-1"), true},
		"no business id":  {mk(callback.EventID("c-2", ok), "c-2", "c-2"), false},
		"original sender": {mk(callback.EventID("biz-3", ok), "biz-3", ""), false},
		"legacy event id": {mk(callback.EventID("c-4", ok), "biz-4", "c-4"), false},
		"own event id":    {mk("custom-5", "biz-5", "c-5"), true},
		"own id, no biz":  {mk("custom-6", "c-6", "c-6"), false},
	}
	for name, c := range cbs {
		if ins, err := s.Save(ctx, c.cb); !ins || err != nil {
			t.Fatalf("%s: Save = %v, %v", name, ins, err)
		}
	}
	for name, c := range cbs {
		var derived bool
		if err := s.r.QueryRowContext(ctx, `SELECT derived FROM callbacks WHERE event_id = ?`, c.cb.EventID).Scan(&derived); err != nil {
			t.Fatal(err)
		}
		if derived == c.needIndex {
			t.Errorf("%s: in the celery_task_id index: %v, want %v", name, !derived, c.needIndex)
		}
		if c.cb.CeleryTaskID == "" {
			continue
		}
		got, err := s.ByTaskID(ctx, c.cb.CeleryTaskID)
		if err != nil || len(got) != 1 || got[0].EventID != c.cb.EventID {
			t.Errorf("%s: ByTaskID(%s) = %+v, %v; want event %s", name, c.cb.CeleryTaskID, got, err, c.cb.EventID)
		}
	}
}
