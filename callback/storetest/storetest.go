// Package storetest is a conformance suite for callback.Store implementations: every store the
// project ships runs it, and a store written elsewhere can run it too.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) callback.Store { return openMyStore(t) })
//	}
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/google/go-cmp/cmp"
)

// Run runs every conformance test as a subtest of t. open returns a new, empty store for one
// subtest; it owns the store's cleanup (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) callback.Store) {
	t.Helper()
	t.Run("SaveLookupStats", func(t *testing.T) { testSaveLookupStats(t, open(t)) })
	t.Run("ConcurrentDuplicates", func(t *testing.T) { testConcurrentDuplicates(t, open(t)) })
}

// mk builds a callback with every field set. The event id is derived from the business id, as
// the receiver and this module's sender derive it.
func mk(task, celery string, status callback.Status, errText *string) callback.Callback {
	body := fmt.Sprintf(`{"task_id":%q,"status":%q}`, task, status)
	return callback.Callback{EventID: callback.EventID(task, string(status)), TaskID: task, CeleryTaskID: celery,
		TaskName: "tasks.x", Status: status, Result: json.RawMessage(`{"n":1}`), Error: errText,
		Timestamp: "2025-12-19T12:44:01+08:00", Attempt: 1, ReceivedAt: time.Unix(1_766_000_000, 123456789),
		Body: json.RawMessage(body)}
}

// testSaveLookupStats: Save dedupes by event id; ByTaskID finds callbacks by business id and by
// Celery id, oldest first, whichever way their event id was made; Seen and Stats agree.
func testSaveLookupStats(t *testing.T, s callback.Store) {
	ctx := context.Background()
	boom := "boom"
	fail := mk("biz-1", "c-1", callback.StatusFailed, &boom)
	ok := mk("biz-1", "c-1", callback.StatusSuccess, nil)
	ok.ReceivedAt = ok.ReceivedAt.Add(time.Second)
	other := mk("biz-2", "c-2", callback.StatusSuccess, nil)
	custom := mk("biz-3", "c-3", callback.StatusSuccess, nil) // a sender with event ids of its own
	custom.EventID = "custom-3"
	orig := mk("biz-4", "", callback.StatusSuccess, nil) // the original Python sender: no Celery id
	legacy := mk("biz-5", "c-5", callback.StatusSuccess, nil)
	legacy.EventID = callback.EventID("c-5", string(callback.StatusSuccess)) // older senders: from the Celery id
	noBiz := mk("c-6", "c-6", callback.StatusFailed, &boom)                  // a task without a business id
	for i, step := range []struct {
		cb   callback.Callback
		want bool
	}{{fail, true}, {fail, false}, {ok, true}, {other, true}, {ok, false}, {ok, false}, {custom, true},
		{orig, true}, {legacy, true}, {noBiz, true}, {noBiz, false}} {
		got, err := s.Save(ctx, step.cb)
		if err != nil || got != step.want {
			t.Fatalf("Save #%d (%s) = %v, %v; want %v", i, step.cb.EventID, got, err, step.want)
		}
	}
	for q, want := range map[string][]callback.Callback{
		"biz-1": {fail, ok}, "c-1": {fail, ok}, "c-3": {custom}, "biz-3": {custom}, "biz-4": {orig},
		"biz-5": {legacy}, "c-5": {legacy}, "c-6": {noBiz}, "nope": nil, "": nil,
	} {
		got, err := s.ByTaskID(ctx, q)
		if err != nil {
			t.Fatalf("ByTaskID(%q): %v", q, err)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("ByTaskID(%q) (-want +got):\n%s", q, diff)
		}
	}
	for id, want := range map[string]bool{fail.EventID: true, other.EventID: true, legacy.EventID: true, "nope": false} {
		if got, err := s.Seen(ctx, id); err != nil || got != want {
			t.Errorf("Seen(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	stats, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := callback.StoreStats{Received: 11, Unique: 7, Duplicates: 4,
		ByStatus: map[callback.Status]int64{callback.StatusSuccess: 5, callback.StatusFailed: 2}}
	if diff := cmp.Diff(want, stats); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

// testConcurrentDuplicates: many goroutines saving the same few events at once insert each
// exactly once; every other Save reports a duplicate.
func testConcurrentDuplicates(t *testing.T, s callback.Store) {
	ctx := context.Background()
	const events, copies = 20, 8
	var inserted [events]atomic.Int64
	var wg sync.WaitGroup
	for i := range events * copies {
		wg.Go(func() {
			cb := mk(fmt.Sprint("dup-", i%events), fmt.Sprint("c-dup-", i%events), callback.StatusSuccess, nil)
			ok, err := s.Save(ctx, cb)
			if err != nil {
				t.Errorf("Save: %v", err)
			}
			if ok {
				inserted[i%events].Add(1)
			}
		})
	}
	wg.Wait()
	for i := range inserted {
		if n := inserted[i].Load(); n != 1 {
			t.Errorf("event dup-%d inserted %d times, want 1", i, n)
		}
	}
	st, err := s.Stats(ctx)
	want := callback.StoreStats{Received: events * copies, Unique: events, Duplicates: events * (copies - 1),
		ByStatus: map[callback.Status]int64{callback.StatusSuccess: events}}
	if err != nil || !cmp.Equal(want, st) {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, want)
	}
}
