package celerycompat_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestGoWorkerServesPythonProducers: messages written by the real Python producer of each Celery
// version run on a Go worker, and Python's AsyncResult.get() reads what the Go worker stored.
func TestGoWorkerServesPythonProducers(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			w := s.goCapWorker(cc.WorkerConfig{Concurrency: 4, PrefetchMultiplier: 4})
			runWorker(t, w)
			past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
			nested := map[string]any{"text": "中文 ünïcode 🎉", "nested": map[string]any{"a": []any{1.5, map[string]any{"b": nil}}, "ok": true}}
			specs := []map[string]any{
				{"name": "cap.add", "args": []any{2, 3}},                                                 // 0
				{"name": "cap.echo", "args": []any{"x"}, "kwargs": nested},                               // 1
				{"name": "cap.record", "args": []any{1}, "headers": map[string]any{"x-custom": "hello"}}, // 2
				{"name": "cap.record", "args": []any{2}, "countdown": 1},                                 // 3
				{"name": "cap.add", "args": []any{1, 1}, "expires": past},                                // 4
				{"name": "cap.retry_me", "kwargs": map[string]any{"x": 3}},                               // 5
				{"name": "cap.add", "args": []any{2, 3}, "link": map[string]any{"name": "cap.add", "args": []any{10},
					"options": map[string]any{"task_id": "1111aaaa-0000-0000-0000-00000000000" + string(peer[0])}}}, // 6
				{"chain": []any{map[string]any{"name": "cap.add", "args": []any{1, 2}}, map[string]any{"name": "cap.add", "args": []any{10}},
					map[string]any{"name": "cap.add", "args": []any{100}}}}, // 7
				{"name": "cap.fail"}, // 8
				{"chord": map[string]any{"header": []any{map[string]any{"name": "cap.add", "args": []any{1, 1}},
					map[string]any{"name": "cap.add", "args": []any{2, 2}}}, "body": map[string]any{"name": "cap.tsum", "args": []any{1000}}}}, // 9
			}
			sentAt := time.Now()
			sent := s.pySend(peer, specs)
			p1 := s.pySend(peer, map[string]any{"name": "cap.add", "args": []any{20, 22}, "protocol": 1})
			ids := append(append([]string{}, sent.IDs...), p1.IDs...)
			ids = append(ids, "1111aaaa-0000-0000-0000-00000000000"+string(peer[0]))
			got := s.pyGet(peer, 20*time.Second, ids...)
			check := func(i int, id string, state string, result any) {
				t.Helper()
				r := got[id]
				if r.State != state || fmt.Sprint(r.Result) != fmt.Sprint(result) {
					t.Errorf("spec %d (%s): Python get() saw %s %v, want %s %v", i, id, r.State, r.Result, state, result)
				}
			}
			check(0, sent.IDs[0], "SUCCESS", 5)
			echo, _ := got[sent.IDs[1]].Result.(map[string]any)
			if fmt.Sprint(echo["kwargs"]) != fmt.Sprint(nested) {
				t.Errorf("echo kwargs %v, want %v", echo["kwargs"], nested)
			}
			check(4, sent.IDs[4], "REVOKED", got[sent.IDs[4]].Result)
			if e := got[sent.IDs[4]].Exc; e == nil || e.Type != "TaskRevokedError" {
				t.Errorf("expired task: %+v, want TaskRevokedError", got[sent.IDs[4]])
			}
			check(5, sent.IDs[5], "SUCCESS", 30)
			check(6, sent.IDs[6], "SUCCESS", 5)
			check(6, ids[len(ids)-1], "SUCCESS", 15)
			check(7, sent.IDs[7], "SUCCESS", 113)
			if r := got[sent.IDs[8]]; r.State != "FAILURE" || r.Exc == nil || r.Exc.Type != "MyError" || r.Exc.Module != "capapp" {
				t.Errorf("cap.fail: Python saw %+v, want the real capapp.MyError", r)
			}
			check(9, sent.IDs[9], "SUCCESS", 1006)
			check(10, p1.IDs[0], "SUCCESS", 42)

			recs := map[string]map[string]any{}
			for _, r := range s.ranRecords() {
				recs[r["id"].(string)] = r
			}
			if h, _ := recs[sent.IDs[2]]["headers"].(map[string]any); h["x-custom"] != "hello" {
				t.Errorf("custom header: record %v", recs[sent.IDs[2]])
			}
			cd := recs[sent.IDs[3]]
			if cd == nil || cd["eta"] == nil {
				t.Fatalf("countdown task record %v, want an eta", cd)
			}
			if ran := time.Unix(0, int64(cd["time"].(float64)*1e9)); ran.Sub(sentAt) < time.Second {
				t.Errorf("countdown=1 task ran %v after sending", ran.Sub(sentAt))
			}
		})
	}
}

// TestMixedFleetRunsEachTaskOnce: one queue, a Python worker and a Go worker together, 1000 tasks.
func TestMixedFleetRunsEachTaskOnce(t *testing.T) {
	const n = 1000
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			py := s.startPyWorker(peer, []string{"CAP_ACKS_LATE=1"}, "--hostname", "py-"+string(peer)+"@%h", "--prefetch", "4")
			w := s.goCapWorker(cc.WorkerConfig{Concurrency: 2, PrefetchMultiplier: 2})
			runWorker(t, w)
			reqs := make([]cc.TaskRequest, n)
			for i := range reqs {
				reqs[i] = cc.TaskRequest{Name: "cap.record", Args: []any{i}}
			}
			// Half from a Go producer, half from the Python producer.
			res, errs := s.producer.SendBatch(t.Context(), reqs[:n/2])
			ids := make([]string, 0, n)
			for i, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, res[i].ID)
			}
			sent := s.pySend(peer, map[string]any{"name": "cap.record", "args": []any{-1}, "count": n / 2})
			ids = append(ids, sent.IDs...)
			eventually(t, 120*time.Second, "1000 tasks run", func() bool { return len(s.ranRecords()) >= n })
			time.Sleep(500 * time.Millisecond) // let a duplicate, if any, show up
			counts := map[string]int{}
			byWorker := map[string]int{}
			for _, r := range s.ranRecords() {
				counts[r["id"].(string)]++
				byWorker[r["worker"].(string)]++
			}
			for _, id := range ids {
				if counts[id] != 1 {
					t.Errorf("task %s ran %d times", id, counts[id])
				}
			}
			if byWorker[w.Hostname()] == 0 || byWorker[py.Hostname] == 0 {
				t.Errorf("runs per worker %v: both workers must take part", byWorker)
			}
			// Every result is readable from both sides.
			sort.Strings(ids)
			sample := ids[:50]
			pyRes := s.pyGet(peer, 10*time.Second, sample...)
			for _, id := range sample {
				meta, err := s.backend.GetMeta(t.Context(), id)
				if err != nil || meta.Status != cc.StateSuccess || pyRes[id].State != "SUCCESS" {
					t.Errorf("task %s: Go reads %v %v, Python reads %s", id, meta.Status, err, pyRes[id].State)
				}
			}
			t.Logf("%s: runs per worker %v", peer, byWorker)
		})
	}
}

// TestPythonWorkerRestoresCrashedGoWorker: Go workers SIGKILLed mid-run; a Python worker with the
// same visibility timeout restores what they held and finishes the run.
func TestPythonWorkerRestoresCrashedGoWorker(t *testing.T) {
	// More tasks than three kills can let run (at most 119 each), so that the last worker
	// killed is always holding messages, however fast it is.
	const n = 600
	const vt = 2 * time.Second
	s := newWStack(t, cc.BrokerConfig{VisibilityTimeout: vt})
	reqs := make([]cc.TaskRequest, n)
	for i := range reqs {
		reqs[i] = cc.TaskRequest{Name: "cap.record", Args: []any{i}, Options: []cc.SendOption{cc.WithTaskID(fmt.Sprintf("pyrest-%04d", i))}}
	}
	if _, errs := s.producer.SendBatch(t.Context(), reqs); errs[0] != nil {
		t.Fatal(errs[0])
	}
	killWorkersRepeatedly(t, s, vt, 3)
	held := s.hlen("unacked")
	time.Sleep(vt + 200*time.Millisecond) // past the visibility timeout: Python's startup sweep restores
	// A Go worker killed mid-sweep leaves unacked_mutex held (at most 30 s); Python sweeps at start
	// and then only every ~100 s, so start it once the lock is gone.
	eventually(t, 40*time.Second, "unacked_mutex to expire", func() bool {
		n, _ := redis.Int(s.r.Do(0, "EXISTS", "unacked_mutex"), nil)
		return n == 0
	})
	s.startPyWorker(celerytest.CeleryNew, []string{"CAP_ACKS_LATE=1", "CAP_VISIBILITY_TIMEOUT=2"}, "--prefetch", "4")
	eventually(t, 90*time.Second, "every task run", func() bool { return len(ranCounts(t, s)) == n })
	eventually(t, 10*time.Second, "nothing left", func() bool { return s.hlen("unacked") == 0 && s.llen("celery") == 0 })
	dups := 0
	for _, c := range ranCounts(t, s) {
		dups += c - 1
	}
	t.Logf("%d tasks; the killed Go workers held %d un-acked; Python restored them; %d ran twice", n, held, dups)
	if held == 0 {
		t.Fatal("the killed Go workers held nothing: the test did not exercise a restore")
	}
}

// TestGoWorkerRestoresCrashedPythonWorker: a Python worker (acks_late) SIGKILLed mid-run; a Go
// worker with the same visibility timeout restores its messages and finishes.
func TestGoWorkerRestoresCrashedPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			const n = 60
			s := newWStack(t, cc.BrokerConfig{VisibilityTimeout: 2 * time.Second})
			py := s.startPyWorker(peer, []string{"CAP_ACKS_LATE=1", "CAP_VISIBILITY_TIMEOUT=2"}, "--prefetch", "8")
			sent := s.pySend(peer, map[string]any{"name": "cap.record_sleep", "args": []any{0.3}, "count": n})
			// Kill it mid-task: its newest record is a "start" with no "end" yet, so (acks_late)
			// that message is certainly still un-acked.
			eventually(t, 30*time.Second, "the Python worker to be mid-task", func() bool {
				recs := s.ranRecords()
				return len(recs) >= 3 && recs[len(recs)-1]["phase"] == "start"
			})
			py.Kill()
			held := s.hlen("unacked")
			if held == 0 {
				t.Fatal("the killed Python worker held nothing")
			}
			w := s.goCapWorker(cc.WorkerConfig{RestoreInterval: 200 * time.Millisecond})
			_ = w.Register("cap.record_sleep", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
				return s.recordRun(ctx, w.Hostname(), req)
			}))
			runWorker(t, w)
			for _, id := range sent.IDs {
				meta, err := wait(t, s.backend.AsyncResult(id), 30*time.Second)
				if err != nil || meta.Status != cc.StateSuccess {
					t.Fatalf("task %s: %v %v", id, meta, err)
				}
			}
			t.Logf("%s: Python held %d un-acked when killed; the Go worker restored and ran them", peer, held)
		})
	}
}
