package celerycompat_test

import (
	"context"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestFlowerSeesGoWorker runs Flower 2.2 against a Go worker: the worker is listed online from
// its heartbeats, Flower's inspector gets its registry and stats over remote control, Flower turns
// its task events on (enable_events), and Go-run tasks appear with their states, args and results.
func TestFlowerSeesGoWorker(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const node = "go@flower"
	w := s.newWorker(cc.WorkerConfig{Hostname: node}) // no SendEvents: Flower enables them
	_ = w.Register("ctl.add", addHandler)
	_ = w.Register("ctl.fail", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, &cc.TaskError{ExcType: "MyError", ExcModule: "capapp", ExcMessage: []any{"boom"}}
	}))
	stop := runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)
	f := celerytest.StartFlower(t, s.r.URL(0), s.r.URL(1))

	f.Poll("/api/workers?status=true", 30*time.Second, "flower listing the Go worker online", func(v map[string]any) bool {
		return v[node] == true
	})
	eventually(t, 30*time.Second, "flower enabling task events on the Go worker", func() bool {
		return obj(call(t, ctl, node, "conf", nil))["worker_send_task_events"] == true
	})
	ok := s.send("ctl.add", []any{2, 3}, map[string]any{"note": "hi"})
	bad := s.send("ctl.fail", []any{"x"}, nil)
	for _, r := range []*cc.AsyncResult{ok, bad} {
		if _, err := r.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tasks := f.Poll("/api/tasks", 30*time.Second, "flower showing both tasks finished", func(v map[string]any) bool {
		return obj(v[ok.ID])["state"] == "SUCCESS" && obj(v[bad.ID])["state"] == "FAILURE"
	})
	tests := []struct {
		id   string
		want map[string]any
	}{
		{ok.ID, map[string]any{"name": "ctl.add", "args": "(2, 3)", "kwargs": "{'note': 'hi'}", "result": "5.0", "worker": node}},
		{bad.ID, map[string]any{"name": "ctl.fail", "args": "('x',)", "exception": "MyError('boom')", "worker": node}},
	}
	for _, tt := range tests {
		got := obj(tasks[tt.id])
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("task %s: %s = %v, want %v", tt.id, k, got[k], v)
			}
		}
		if got["received"] == nil || got["started"] == nil {
			t.Errorf("task %s: no received/started times: %v", tt.id, got)
		}
	}

	workers := f.Poll("/api/workers?refresh=1", 30*time.Second, "flower's inspector data for the Go worker", func(v map[string]any) bool {
		wk := obj(v[node])
		return wk["registered"] != nil && wk["stats"] != nil && wk["active_queues"] != nil
	})
	wk := obj(workers[node])
	if reg := list(wk["registered"]); len(reg) != 2 || reg[0] != "ctl.add" {
		t.Errorf("registered in flower: %v", wk["registered"])
	}
	if obj(obj(wk["stats"])["pool"])["max-concurrency"] != 1.0 {
		t.Errorf("stats in flower: %v", wk["stats"])
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f.Poll("/api/workers?status=true", 30*time.Second, "flower listing the stopped Go worker offline", func(v map[string]any) bool {
		return v[node] == false
	})
}
