package celerycompat_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestLinkErrorMixedWorkers pins down the one documented difference in errbacks (see the
// package doc), both ways, against each real Celery:
//
//   - A task failing on a Go worker publishes each errback as a task with the failed id as its
//     argument: a one-argument Python errback (cap.on_err) runs with it; a Python errback of
//     the inline shape (request, exc, traceback) fails with TypeError, as it would if a Python
//     worker without it registered had forwarded it.
//   - A task failing on a Python worker whose errback only Go knows is forwarded as a task with
//     (task_id,), which the Go worker runs; an errback the Python worker knows with three
//     parameters is called inline there with (request, exc, traceback).
func TestLinkErrorMixedWorkers(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			s.startPyWorker(peer, nil, "--hostname", "py-"+string(peer)+"@%h", "--queues", "celery")

			goErrbacks := make(chan []any, 4)
			w := s.newWorker(cc.WorkerConfig{Queues: []string{"go"}})
			_ = w.Register("go.fail", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
				return nil, cc.NewTaskError("ValueError", "go failed")
			}))
			_ = w.Register("go.on_err", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
				goErrbacks <- req.Args
				return nil, nil
			}))
			runWorker(t, w)

			// Go worker fails; errbacks run on the Python worker.
			oneArg := cc.NewSignature("cap.on_err", nil, nil)
			oneArg.Options["task_id"] = fmt.Sprintf("e1e1e1e1-0000-0000-0000-%012d", len(peer))
			oneArg.Options["queue"] = "celery"
			inline := cc.NewSignature("cap.on_err3", nil, nil)
			inline.Options["task_id"] = fmt.Sprintf("e3e3e3e3-0000-0000-0000-%012d", len(peer))
			inline.Options["queue"] = "celery"
			failed := s.send("go.fail", nil, nil, cc.WithQueue("go"), cc.WithLinkError(oneArg, inline))
			got := s.pyGet(peer, 20*time.Second, failed.ID, oneArg.Options["task_id"].(string), inline.Options["task_id"].(string))
			if r := got[failed.ID]; r.State != "FAILURE" || r.Exc == nil || r.Exc.Type != "ValueError" {
				t.Errorf("go.fail: Python saw %+v, want FAILURE ValueError", r)
			}
			if r := got[oneArg.Options["task_id"].(string)]; r.State != "SUCCESS" || r.Result != failed.ID {
				t.Errorf("cap.on_err after a Go failure: %+v, want SUCCESS with the failed id %s", r, failed.ID)
			}
			if r := got[inline.Options["task_id"].(string)]; r.State != "FAILURE" || r.Exc == nil || r.Exc.Type != "TypeError" {
				t.Errorf("cap.on_err3 after a Go failure: %+v, want FAILURE TypeError (called as a task with the id)", r)
			}

			// Python worker fails; a Go-only errback is forwarded, a Python inline one is called inline.
			sent := s.pySend(peer, []map[string]any{
				{"name": "cap.fail", "link_error": []any{
					map[string]any{"name": "go.on_err", "options": map[string]any{"queue": "go"}},
					map[string]any{"name": "cap.on_err3"},
				}},
			})
			pyFailed := sent.IDs[0]
			select {
			case args := <-goErrbacks:
				if len(args) != 1 || args[0] != pyFailed {
					t.Errorf("go.on_err after a Python failure got args %v, want [%s]", args, pyFailed)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("go.on_err never ran after the Python failure")
			}
			eventually(t, 20*time.Second, "cap.on_err3 inline record", func() bool {
				for _, rec := range s.ranRecords() {
					if rec["task"] == "cap.on_err3" && rec["failed_id"] == pyFailed && rec["inline"] == true && rec["exc"] == "MyError" {
						return true
					}
				}
				return false
			})
		})
	}
}
