package celerycompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// flower is a real Flower (the venv's) watching the stack's Redis.
type flower struct {
	t    *testing.T
	base string
	log  string
}

func startFlower(t *testing.T, s *wstack) *flower {
	t.Helper()
	py, _ := celerytest.Python(t, celerytest.CeleryNew)
	if err := exec.Command(py, "-c", "import flower").Run(); err != nil {
		celerytest.Missing(t, "%s cannot import flower: %v", py, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	f := &flower{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(t.TempDir(), "flower.log")}
	logFile, err := os.Create(f.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-m", "celery", "-A", "capapp", "flower", fmt.Sprintf("--port=%d", port), "--address=127.0.0.1")
	cmd.Dir = celerytest.PythonDir(t)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+s.r.URL(0), "BACKEND_URL="+s.r.URL(1),
		"FLOWER_UNAUTHENTICATED_API=true")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	eventually(t, 60*time.Second, "flower answering HTTP", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(f.log)
			t.Fatalf("flower exited:\n%s", b)
		default:
		}
		var v any
		return f.tryGet("/api/workers?status=true", &v) == nil
	})
	return f
}

func (f *flower) tryGet(path string, dst any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, dst)
}

// poll GETs path until cond holds on the decoded JSON, failing after timeout with the last body.
func (f *flower) poll(path string, timeout time.Duration, what string, cond func(v map[string]any) bool) map[string]any {
	f.t.Helper()
	var last map[string]any
	eventually(f.t, timeout, what, func() bool {
		last = nil
		return f.tryGet(path, &last) == nil && cond(last)
	})
	return last
}

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
	f := startFlower(t, s)

	f.poll("/api/workers?status=true", 30*time.Second, "flower listing the Go worker online", func(v map[string]any) bool {
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
	tasks := f.poll("/api/tasks", 30*time.Second, "flower showing both tasks finished", func(v map[string]any) bool {
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

	workers := f.poll("/api/workers?refresh=1", 30*time.Second, "flower's inspector data for the Go worker", func(v map[string]any) bool {
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
	f.poll("/api/workers?status=true", 30*time.Second, "flower listing the stopped Go worker offline", func(v map[string]any) bool {
		return v[node] == false
	})
}
