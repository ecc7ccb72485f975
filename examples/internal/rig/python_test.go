package rig

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
	"github.com/google/go-cmp/cmp"
)

// sharedVars are the variables the Python originals read; the tests set them explicitly.
var sharedVars = []string{"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "RESULT_URL",
	"CALLBACK_URL", "TASK_SLEEP", "CONCURRENCY", "PORT", "API_URL", "TOTAL_TASKS", "SUBMIT_CONCURRENCY"}

// pyCmd builds a command running the venv's Python in dir with the originals importable, no
// bytecode written into the tree, and only the shared variables given in vars.
func pyCmd(t testing.TB, dir string, vars env, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(venvPython(t), args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(sharedVars, name) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PYTHONPATH="+pythonDir(t), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func pythonDir(t testing.TB) string { return filepath.Join(repoRoot(t), "examples", "python") }

// TestPythonOriginalsImport compiles the four originals and checks, by importing them, that they
// read the shared variables (and keep the original values without them).
func TestPythonOriginalsImport(t *testing.T) {
	dir := pythonDir(t)
	files := []string{"tasks.py", "main_api.py", "callback_receiver.py", "test_batch_submit.py"}
	script := `import json, py_compile, sys
for f in sys.argv[1:]:
    py_compile.compile(f, cfile=sys.argv[0] + "." + f + "c", doraise=True)
import tasks, main_api, callback_receiver, test_batch_submit as b
c = tasks.celery_app.conf
print(json.dumps({"broker": c.broker_url, "backend": c.result_backend, "callback": tasks.CALLBACK_URL,
    "sleep": tasks.TASK_SLEEP, "concurrency": c.worker_concurrency, "pool": c.worker_pool,
    "api": b.API_URL, "total": b.TOTAL_TASKS, "parallel": b.SUBMIT_CONCURRENCY,
    "titles": [main_api.app.title, callback_receiver.app.title]}))
`
	scriptPath := filepath.Join(t.TempDir(), "check.py")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	titles := []any{"任务提交服务", "任务回调接收服务"}
	tests := []struct {
		name string
		vars env
		want map[string]any
	}{
		{"original values", env{}, map[string]any{
			"broker": "redis://localhost:6379/0", "backend": "redis://localhost:6379/0",
			"callback": "http://127.0.0.1:8001/receive-task-result", "sleep": 1.0, "concurrency": 1.0,
			"pool": "solo", "api": "http://localhost:8000/submit-task", "total": 1000.0, "parallel": 1000.0,
			"titles": titles}},
		{"shared variables", env{"CELERY_BROKER_URL": "redis://b:1/2", "REDIS_URL": "redis://a:1/0", "RESULT_URL": "redis://r:3/4",
			"CALLBACK_URL": "http://cb:9/x", "TASK_SLEEP": "0", "CONCURRENCY": "3",
			"API_URL": "http://api:1/submit-task", "TOTAL_TASKS": "5", "SUBMIT_CONCURRENCY": "2"},
			map[string]any{
				"broker": "redis://b:1/2", "backend": "redis://r:3/4", "callback": "http://cb:9/x",
				"sleep": 0.0, "concurrency": 3.0, "pool": "prefork", "api": "http://api:1/submit-task",
				"total": 5.0, "parallel": 2.0, "titles": titles}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := pyCmd(t, dir, tt.vars, append([]string{scriptPath}, files...)...).Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("%v\n%s", err, ee.Stderr)
				}
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// pyWorker is the original Python worker (tasks.py) as a child process.
type pyWorker struct {
	cmd  *exec.Cmd
	out  *celerytest.SyncBuffer
	done chan struct{}
}

func startPyWorker(t *testing.T, vars env) *pyWorker {
	t.Helper()
	w := &pyWorker{out: &celerytest.SyncBuffer{}, done: make(chan struct{})}
	w.cmd = pyCmd(t, pythonDir(t), vars, "-m", "celery", "-A", "tasks.celery_app", "worker",
		"--loglevel=info", "-c", "1", "--without-mingle", "--without-gossip", "-n", "py@localhost")
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("python worker output:\n%s", w.out.String())
		}
	})
	return w
}

// stop asks for Celery's warm shutdown and kills the worker if it takes too long.
func (w *pyWorker) stop() {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

// TestPythonAndGoWorkersAgree runs the original rig's pieces against the Go services: the Python
// worker runs what the Go API submits and calls back the Go receiver; the Go worker's result for
// the same data equals the Python worker's; the original batch submitter drives the Go API; and
// the Go worker runs a task sent by Python's process_task.delay.
func TestPythonAndGoWorkersAgree(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	store, _ := startReceiver(t, &cfg)
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)
	pyVars := env{"REDIS_URL": cfg.RedisURL, "CALLBACK_URL": cfg.CallbackURL, "TASK_SLEEP": "0"}

	// The Python worker.
	py := startPyWorker(t, pyVars)
	const data = `{"task_index": 7, "content": "测试任务7", "nested": {"f": 1.5, "l": [1, "二", null, true]}}`
	pySub := submit(t, api, data)
	pyResult := waitStatus(t, api, pySub.BusinessTaskID, "SUCCESS").Result
	var wantData any
	_ = json.Unmarshal([]byte(data), &wantData)
	if diff := cmp.Diff(meaning(t, TaskResult(pySub.BusinessTaskID, wantData, 0)), meaning(t, pyResult)); diff != "" {
		t.Errorf("Python worker's result vs TaskResult (-want +got):\n%s", diff)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		cbs, _ := store.ByTaskID(context.Background(), pySub.BusinessTaskID)
		return len(cbs) == 1 && cbs[0].Status == "success", "no success callback from the Python worker yet"
	})
	py.stop()

	// The Go worker, same data.
	startWorker(t, cfg, deps)
	goSub := submit(t, api, data)
	goResult := waitStatus(t, api, goSub.CeleryTaskID, "SUCCESS").Result
	normalize := func(v any, id string) any {
		m := meaning(t, v).(map[string]any)
		if m["business_task_id"] == id {
			m["business_task_id"] = "<business id>"
		}
		return m
	}
	if diff := cmp.Diff(normalize(pyResult, pySub.BusinessTaskID), normalize(goResult, goSub.BusinessTaskID)); diff != "" {
		t.Errorf("Go worker's result vs the Python worker's (-python +go):\n%s", diff)
	}

	// The original batch submitter against the Go API.
	srv := httptest.NewServer(api)
	defer srv.Close()
	work := t.TempDir()
	out, err := pyCmd(t, work, env{"API_URL": srv.URL + "/submit-task", "TOTAL_TASKS": "5", "SUBMIT_CONCURRENCY": "2"},
		filepath.Join(pythonDir(t), "test_batch_submit.py")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "提交成功数：5") {
		t.Fatalf("test_batch_submit.py: %v\n%s", err, out)
	}
	lines, err := os.ReadFile(filepath.Join(work, "submitted_tasks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(lines)), "\n")
	if len(rows) != 5 {
		t.Fatalf("submitted_tasks.txt has %d rows:\n%s", len(rows), lines)
	}
	for _, row := range rows {
		f := strings.Split(row, ",")
		if len(f) != 3 {
			t.Fatalf("submitted_tasks.txt row %q", row)
		}
		if st := waitStatus(t, api, f[1], "SUCCESS"); st.CeleryTaskID != f[2] {
			t.Errorf("row %q: status %+v", row, st)
		}
	}

	// A task sent by Python's process_task.delay, run by the Go worker.
	out, err = pyCmd(t, pythonDir(t), pyVars, "-c",
		`from tasks import process_task; print(process_task.delay(task_id="biz-py", data={"k": 1}).id)`).Output()
	if err != nil {
		t.Fatalf("process_task.delay: %v %s", err, out)
	}
	celeryID := strings.TrimSpace(string(out))
	st := waitStatus(t, api, celeryID, "SUCCESS")
	if diff := cmp.Diff(meaning(t, TaskResult("biz-py", map[string]any{"k": 1}, 0)), meaning(t, st.Result)); diff != "" {
		t.Errorf("Go worker's result for a Python submission (-want +got):\n%s", diff)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		cbs, _ := store.ByTaskID(context.Background(), "biz-py")
		return len(cbs) == 1 && cbs[0].CeleryTaskID == celeryID, "no callback for biz-py yet"
	})
	if n := len(store.All()); n != 1+1+5+1 {
		t.Errorf("%d callbacks stored, want 8 (one per task)", n)
	}
}
