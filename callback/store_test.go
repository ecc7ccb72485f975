package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStores(t *testing.T) {
	stores := []struct {
		name string
		open func(t *testing.T) Store
	}{
		{"memory", func(t *testing.T) Store { return NewMemoryStore() }},
		{"sqlite", func(t *testing.T) Store { return newSQLite(t, "") }},
	}
	received := time.Unix(1_766_000_000, 123456789)
	cb := func(task, celery string, status Status, errText *string) Callback {
		body := fmt.Sprintf(`{"task_id":%q,"status":%q}`, task, status)
		return Callback{EventID: EventID(celery, string(status)), TaskID: task, CeleryTaskID: celery, TaskName: "tasks.x",
			Status: status, Result: json.RawMessage(`{"n":1}`), Error: errText, Timestamp: "2025-12-19T12:44:01+08:00",
			Attempt: 1, ReceivedAt: received, Body: json.RawMessage(body)}
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s := st.open(t)
			fail := cb("biz-1", "c-1", StatusFailed, strp("boom"))
			ok := cb("biz-1", "c-1", StatusSuccess, nil)
			other := cb("biz-2", "c-2", StatusSuccess, nil)
			for i, step := range []struct {
				cb   Callback
				want bool
			}{{fail, true}, {fail, false}, {ok, true}, {other, true}, {ok, false}, {ok, false}} {
				got, err := s.Save(ctx, step.cb)
				if err != nil || got != step.want {
					t.Fatalf("Save #%d (%s) = %v, %v; want %v", i, step.cb.EventID, got, err, step.want)
				}
			}
			for _, q := range []string{"biz-1", "c-1"} {
				got, err := s.ByTaskID(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]Callback{fail, ok}, got,
					cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
					t.Errorf("ByTaskID(%s) (-want +got):\n%s", q, diff)
				}
			}
			if got, _ := s.ByTaskID(ctx, "nope"); len(got) != 0 {
				t.Errorf("ByTaskID(nope) = %v", got)
			}
			for id, want := range map[string]bool{fail.EventID: true, other.EventID: true, "nope": false} {
				if got, err := s.Seen(ctx, id); err != nil || got != want {
					t.Errorf("Seen(%s) = %v, %v; want %v", id, got, err, want)
				}
			}
			stats, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := StoreStats{Received: 6, Unique: 3, Duplicates: 3, ByStatus: map[Status]int64{StatusSuccess: 2, StatusFailed: 1}}
			if diff := cmp.Diff(want, stats); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
		})
	}
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
			c := Callback{EventID: fmt.Sprint("e", i%(n/2)), TaskID: fmt.Sprint("t", i%(n/2)), Status: StatusSuccess,
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
	if _, err := s.Save(ctx, Callback{EventID: "x"}); !errors.Is(err, ErrStoreClosed) {
		t.Errorf("Save after Close = %v, want ErrStoreClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrStoreClosed) {
		t.Errorf("second Close = %v, want ErrStoreClosed", err)
	}

	s2 := newSQLite(t, path)
	stats, err := s2.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := StoreStats{Received: n, Unique: n / 2, Duplicates: n / 2, ByStatus: map[Status]int64{StatusSuccess: n / 2}}
	if diff := cmp.Diff(want, stats); diff != "" {
		t.Errorf("Stats after reopen (-want +got):\n%s", diff)
	}
	if ins, err := s2.Save(ctx, Callback{EventID: "e7", TaskID: "t7", Status: StatusSuccess}); err != nil || ins {
		t.Errorf("Save of a stored event after reopen = %v, %v; want duplicate", ins, err)
	}
}

func TestNewSQLiteStoreBadPath(t *testing.T) {
	for _, p := range []string{"", ":memory:", "/tmp/x.db?mode=ro"} {
		if _, err := NewSQLiteStore(context.Background(), p); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewSQLiteStore(%q) = %v, want ErrInvalidConfig", p, err)
		}
	}
	if _, err := NewSQLiteStore(context.Background(), filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")); !errors.Is(err, ErrStore) {
		t.Errorf("NewSQLiteStore in a missing dir = %v, want ErrStore", err)
	}
}
