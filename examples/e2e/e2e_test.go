package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/examples/internal/loadtest"
	"github.com/google/uuid"
)

// callbackStats is the Go receiver's GET /callbacks/stats.
type callbackStats struct {
	Received   int64            `json:"received"`
	Unique     int64            `json:"unique"`
	Duplicates int64            `json:"duplicates"`
	ByStatus   map[string]int64 `json:"by_status"`
}

func (r *rig) stats() callbackStats {
	r.t.Helper()
	var st callbackStats
	if code := getJSON(r.t, r.receiverURL()+"/callbacks/stats", &st); code != 200 {
		r.t.Fatalf("GET /callbacks/stats: %d", code)
	}
	return st
}

// waitUnique waits until the Go receiver holds at least n callbacks.
func (r *rig) waitUnique(n int64, timeout time.Duration) callbackStats {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := r.stats()
		if st.Unique >= n {
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the receiver holds %d callbacks after %v, want %d", st.Unique, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storedCallbacks is the Go receiver's GET /callbacks/{id}.
type storedCallbacks struct {
	Code      int                 `json:"code"`
	TaskID    string              `json:"task_id"`
	Callbacks []callback.Callback `json:"callbacks"`
}

// submittedIDs reads the business ids from the rig's submitted_tasks.txt.
func (r *rig) submittedIDs() []string {
	r.t.Helper()
	raw, err := os.ReadFile(filepath.Join(r.dir, "submitted_tasks.txt"))
	if err != nil {
		r.t.Fatal(err)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		parts := strings.Split(l, ",")
		if len(parts) != 3 {
			r.t.Fatalf("submitted_tasks.txt line %q", l)
		}
		ids = append(ids, parts[1])
	}
	return ids
}

// TestAllGo is the original test with every service in Go: 1000 tasks at once through the
// load tester binary, an exact report and no duplicate in the receiver's store.
func TestAllGo(t *testing.T) {
	r := newRig(t)
	r.goReceiver()
	r.goWorker("go-worker")
	r.goAPI()

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, "loadtest"), "-n", "1000", "-timeout", "2m", "-no-progress",
		"-json", filepath.Join(dir, "report.json"), "-out", filepath.Join(dir, "submitted_tasks.txt"))
	cmd.Env = environ("API_URL="+r.apiURL(), "RECEIVER_URL="+r.receiverURL(), "REDIS_URL="+r.redis.URL(0))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("loadtest: %v\n%s", err, out)
	}
	for _, want := range []string{"===== submission summary =====", "succeeded:    1000", "===== consistency report =====", "CONSISTENT"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	checkExact(t, &rep, nil, 1000)
	if rep.States["SUCCESS"] != 1000 || rep.ByStatus["success"] != 1000 {
		t.Errorf("states %v, callbacks by status %v", rep.States, rep.ByStatus)
	}
	if n := lines(t, filepath.Join(dir, "submitted_tasks.txt")); n != 1000 {
		t.Errorf("submitted_tasks.txt has %d lines", n)
	}
	st := r.stats()
	if st.Unique != 1000 || st.ByStatus["success"] != 1000 {
		t.Errorf("receiver store: %+v, want 1000 unique callbacks", st)
	}
	t.Logf("receiver store: %+v", st)
}

// TestPythonAPIGoWorker: the original main_api.py submits, the Go worker runs the tasks and its
// callbacks reach the Go receiver.
func TestPythonAPIGoWorker(t *testing.T) {
	r := newRig(t)
	r.goReceiver()
	r.goWorker("go-worker")
	r.pyAPI()
	rep, err := r.load(300, 2*time.Minute, nil)
	checkExact(t, rep, err, 300)
	var cbs storedCallbacks
	id := r.submittedIDs()[0]
	getJSON(t, r.receiverURL()+"/callbacks/"+id, &cbs)
	if len(cbs.Callbacks) != 1 || cbs.Callbacks[0].CeleryTaskID == "" || cbs.Callbacks[0].Attempt < 1 {
		t.Errorf("callbacks of %s: %+v, want one from the Go dispatcher (celery_task_id, attempt)", id, cbs)
	}
}

// TestGoAPIPythonWorker: the Go API submits, the original tasks.py worker runs the tasks and
// its own signal handlers POST the callbacks to the Go receiver, which dedupes them by the id it
// derives from task_id and status.
func TestGoAPIPythonWorker(t *testing.T) {
	r := newRig(t)
	r.goReceiver()
	r.pyWorker("py-worker")
	r.goAPI()
	rep, err := r.load(200, 2*time.Minute, nil)
	checkExact(t, rep, err, 200)

	id := r.submittedIDs()[0]
	var cbs storedCallbacks
	getJSON(t, r.receiverURL()+"/callbacks/"+id, &cbs)
	if len(cbs.Callbacks) != 1 || cbs.Callbacks[0].CeleryTaskID != "" || cbs.Callbacks[0].EventID != callback.EventID(id, "success") {
		t.Errorf("callbacks of %s: %+v, want one from the Python signal handler (no celery_task_id)", id, cbs)
	}
	var st taskStatus
	if code := getJSON(t, r.apiURL()+"/task-status/"+id, &st); code != 200 || st.Status != "SUCCESS" {
		t.Errorf("/task-status of a task the Python worker ran: %d %+v", code, st)
	}
}

// TestBothWorkers: a Go worker and the original Python worker consume one queue; every task runs
// once and has one callback, whichever worker ran it.
func TestBothWorkers(t *testing.T) {
	r := newRig(t)
	r.taskSleep = "0.01"
	r.goReceiver()
	r.goWorker("go-worker")
	r.pyWorker("py-worker")
	r.goAPI()
	rep, err := r.load(300, 2*time.Minute, nil)
	checkExact(t, rep, err, 300)

	var goRan, pyRan int
	for _, id := range r.submittedIDs() {
		var cbs storedCallbacks
		if code := getJSON(t, r.receiverURL()+"/callbacks/"+id, &cbs); code != 200 || len(cbs.Callbacks) != 1 {
			t.Fatalf("callbacks of %s: %d %+v", id, code, cbs)
		}
		if cbs.Callbacks[0].CeleryTaskID != "" {
			goRan++ // the Go dispatcher sends celery_task_id; the original handler does not
		} else {
			pyRan++
		}
	}
	t.Logf("the Go worker ran %d tasks, the Python worker %d", goRan, pyRan)
	if goRan == 0 || pyRan == 0 {
		t.Errorf("want both workers to run tasks: Go %d, Python %d", goRan, pyRan)
	}
}

// TestGoWorkerKilled kills the Go worker with SIGKILL mid-run and starts another: the message it
// held is restored and runs again, callbacks it had enqueued but not delivered are delivered by
// the new worker's dispatcher once their lease expires, and the report is still exact.
//
// The services have no setting for the visibility timeout (kombu's default is an hour), so the
// test does what the restore sweep does once it has passed: it restores every un-acked message
// while no worker runs.
func TestGoWorkerKilled(t *testing.T) {
	r := newRig(t)
	r.taskSleep = "0.005"
	r.goReceiver()
	w := r.goWorker("go-worker")
	r.goAPI()

	const n = 600
	done := r.loadInBackground(n, 3*time.Minute)
	before := r.waitUnique(150, time.Minute)
	w.kill()
	if before.Unique >= n {
		t.Fatalf("the run was over before the kill (%d callbacks)", before.Unique)
	}
	pool := r.redis.Pool(0)
	ctx := context.Background()
	broker, err := celerycompat.NewBroker(pool, celerycompat.BrokerConfig{VisibilityTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	held := r.redis.do("HLEN", broker.Keys().Unacked()).(int64)
	var restored int
	for i := 0; ; i++ {
		n, skipped, err := broker.RestoreVisible(ctx)
		if err != nil {
			t.Fatal(err)
		}
		restored += n
		if !skipped {
			break
		}
		if i == 50 {
			t.Fatal("unacked_mutex stayed taken: the killed worker held it")
		}
		time.Sleep(100 * time.Millisecond)
	}
	obStats := r.outboxStats()
	t.Logf("killed at %d callbacks: %d message(s) held un-acked, %d restored; outbox: %d pending, %d in flight (their lease expires in 40 s)",
		before.Unique, held, restored, obStats.Pending, obStats.InFlight)
	if int64(restored) != held {
		t.Errorf("restored %d of %d held messages", restored, held)
	}

	r.goWorker("go-worker-2")
	res := <-done
	checkExact(t, res.rep, res.err, n)
	if st := r.stats(); st.Unique != n {
		t.Errorf("receiver store: %+v, want %d unique", st, n)
	}
}

// TestReceiverDown stops the Go receiver for 10 s mid-run: callbacks wait in the outbox and are
// delivered after it is back (the same SQLite store), none lost, none stored twice.
func TestReceiverDown(t *testing.T) {
	r := newRig(t)
	r.taskSleep = "0.005"
	recv := r.goReceiver()
	r.goWorker("go-worker")
	r.goAPI()

	const n = 600
	done := r.loadInBackground(n, 3*time.Minute)
	before := r.waitUnique(150, time.Minute)
	recv.stop()
	if before.Unique >= n {
		t.Fatalf("the run was over before the outage (%d callbacks)", before.Unique)
	}
	time.Sleep(10 * time.Second)
	obStats := r.outboxStats()
	if obStats.Pending+obStats.InFlight == 0 {
		t.Errorf("after 10 s of outage the outbox is empty: %+v", obStats)
	}
	if obStats.Dead != 0 {
		t.Errorf("dead letters: %+v", obStats)
	}
	r.goReceiver()
	res := <-done
	t.Logf("outage at %d callbacks; %d waiting in the outbox when the receiver came back", before.Unique, obStats.Pending+obStats.InFlight)
	checkExact(t, res.rep, res.err, n)
	if st := r.stats(); st.Unique != n {
		t.Errorf("receiver store: %+v, want %d unique", st, n)
	}
}

// taskStatus is GET /task-status/{id} of the Go API.
type taskStatus struct {
	Code           int     `json:"code"`
	BusinessTaskID string  `json:"business_task_id"`
	CeleryTaskID   string  `json:"celery_task_id"`
	Status         string  `json:"status"`
	Result         any     `json:"result"`
	Error          *string `json:"error"`
	Retries        *int    `json:"retries"`
	Worker         *string `json:"worker"`
}

// TestTaskStatus asks the Go API for a queued, a running, a finished, a failed and an unknown
// task, by business id and by Celery id.
func TestTaskStatus(t *testing.T) {
	r := newRig(t)
	r.taskSleep = "1.5"
	r.goReceiver()
	r.goWorker("go-worker")
	r.goAPI()

	type ids struct{ business, celery string }
	submit := func(body string) ids {
		var a struct {
			Code           int    `json:"code"`
			BusinessTaskID string `json:"business_task_id"`
			CeleryTaskID   string `json:"celery_task_id"`
		}
		if code := postJSON(t, r.apiURL()+"/submit-task", body, &a); code != 200 || a.Code != 200 {
			t.Fatalf("submit %s: %d %+v", body, code, a)
		}
		return ids{a.BusinessTaskID, a.CeleryTaskID}
	}
	status := func(id string) (int, taskStatus) {
		var st taskStatus
		code := getJSON(t, r.apiURL()+"/task-status/"+id, &st)
		return code, st
	}
	waitFor := func(id ids, want string) taskStatus {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, st := status(id.business)
			if code == 200 && st.Status == want {
				if st.BusinessTaskID != id.business || st.CeleryTaskID != id.celery {
					t.Errorf("%s: ids %+v, want %+v", want, st, id)
				}
				if code, byCelery := status(id.celery); code != 200 || byCelery.BusinessTaskID != id.business || byCelery.CeleryTaskID != id.celery {
					t.Errorf("by Celery id: %d %+v, want the same task as %+v", code, byCelery, id)
				}
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: status %d %+v, want %s", id.business, code, st, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if code, st := status(uuid.NewString()); code != 404 || st.Code != 404 {
		t.Errorf("unknown id: %d %+v, want 404", code, st)
	}
	failing := submit(`{"task_index": 1, "content": "fails", "fail": true}`)
	running := waitFor(failing, "STARTED")
	if running.Worker == nil || *running.Worker == "" || running.Result != nil {
		t.Errorf("running: %+v, want the worker's name and no result", running)
	}
	queued := submit(`{"task_index": 2, "content": "queued"}`)
	if code, st := status(queued.business); code != 200 || st.Status != "PENDING" || st.Result != nil {
		t.Errorf("queued behind a running task: %d %+v, want PENDING", code, st)
	}
	failed := waitFor(failing, "FAILURE")
	if failed.Error == nil || !strings.Contains(*failed.Error, "simulated failure") || failed.Result != nil {
		t.Errorf("failed: %+v, want the error and no result", failed)
	}
	waitFor(queued, "STARTED")
	finished := waitFor(queued, "SUCCESS")
	res, _ := finished.Result.(map[string]any)
	data, _ := res["data"].(map[string]any)
	if res["business_task_id"] != queued.business || data["content"] != "queued" || finished.Error != nil {
		t.Errorf("finished: %+v, want the original's result", finished)
	}
	for id, want := range map[string]string{failing.business: "failed", queued.business: "success"} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			var cbs storedCallbacks
			code := getJSON(t, r.receiverURL()+"/callbacks/"+id, &cbs)
			if code == 200 {
				if len(cbs.Callbacks) != 1 || string(cbs.Callbacks[0].Status) != want {
					t.Errorf("callbacks of %s: %+v, want one %q", id, cbs, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no callback for %s", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
