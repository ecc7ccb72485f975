//go:build unix

package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// venvPython returns the project venv's interpreter, checking it has what the callback tests
// use (FastAPI, uvicorn, requests). It skips locally and fails under CI when they are missing.
func venvPython(t testing.TB) string {
	t.Helper()
	py, _ := celerytest.Python(t, celerytest.CeleryNew)
	if out, err := exec.Command(py, "-c", "import fastapi, uvicorn, requests").CombinedOutput(); err != nil {
		celerytest.Missing(t, "%s cannot import fastapi, uvicorn and requests: %v\n%s", py, err, out)
	}
	return py
}

// startUvicorn runs examples/python/callback_receiver.py, the original FastAPI receiver, on a
// free loopback port and returns its URL and output.
func startUvicorn(t *testing.T, py string) (string, *celerytest.SyncBuffer) {
	t.Helper()
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(py, "-m", "uvicorn", "callback_receiver:app", "--host", host, "--port", port, "--no-access-log")
	cmd.Dir = filepath.Join(celerytest.RepoRoot(t), "examples", "python")
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	out := &celerytest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start uvicorn: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	waitFor(t, 60*time.Second, "uvicorn to listen on "+addr, func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false, out.String()
		}
		c.Close()
		return true, ""
	})
	return "http://" + addr + "/receive-task-result", out
}

// TestPythonOriginalReceiver: the original FastAPI receiver accepts our signed callbacks
// unchanged.
func TestPythonOriginalReceiver(t *testing.T) {
	py := venvPython(t)
	_, pool := startRedis(t)
	url, out := startUvicorn(t, py)
	ob := newTestOutbox(t, pool, url)
	evs := events("py-receiver", 20)
	evs[3].Status, evs[3].Result, evs[3].Error = StatusFailed, nil, "ValueError('boom')"
	enqueueAll(t, ob, evs)
	runDispatcher(t, ob, fastDispatch())
	st := waitDrained(t, ob, 60*time.Second)
	if st.Dead != 0 {
		dl, _ := ob.DeadLetters(context.Background(), 0)
		t.Fatalf("dead letters: %+v", dl)
	}
	waitFor(t, 10*time.Second, "the receiver to print every callback", func() (bool, string) {
		s := out.String()
		for _, ev := range evs {
			if !strings.Contains(s, "【回调接收】任务 "+ev.TaskID+"，状态："+string(ev.Status)) {
				return false, s
			}
		}
		return true, ""
	})
}

// TestPythonVerifiesSignature runs the Python verification recipe from the package
// documentation (extracted from doc.go, so the documented code is the tested code) against
// signatures made by Sign.
func TestPythonVerifiesSignature(t *testing.T) {
	py := venvPython(t)
	recipe := docPythonRecipe(t)
	secret := "shared secret ✓"
	body := `{"task_id":"t1","status":"success","result":{"msg":"任务执行完成"},"error":null}`
	now := int64(1_766_000_000)
	good := Sign([]byte(secret), now, []byte(body))
	type pyCase struct {
		Name      string  `json:"name"`
		Secret    string  `json:"secret"`
		Timestamp string  `json:"timestamp"`
		Signature string  `json:"signature"`
		Body      string  `json:"body"`
		Now       float64 `json:"now"`
	}
	ts := fmt.Sprint(now)
	cases := []pyCase{
		{"valid", secret, ts, good, body, float64(now)},
		{"valid, several entries", secret, ts, "v1=deadbeef," + good, body, float64(now + 299)},
		{"body changed", secret, ts, good, strings.Replace(body, "t1", "t2", 1), float64(now)},
		{"wrong secret", "other", ts, good, body, float64(now)},
		{"stale", secret, ts, good, body, float64(now + 301)},
		{"missing signature", secret, ts, "", body, float64(now)},
		{"timestamp not a number", secret, "soon", good, body, float64(now)},
		{"non-ASCII signature", secret, ts, "v1=é" + good[4:], body, float64(now)},
	}
	want := []bool{true, true, false, false, false, false, false, false}
	for i, c := range cases { // the Go side agrees
		err := Verify([]byte(c.Secret), c.Timestamp, c.Signature, []byte(c.Body), time.Unix(int64(c.Now), 0), 0)
		if (err == nil) != want[i] {
			t.Errorf("Go Verify(%s) = %v, want ok=%v", c.Name, err, want[i])
		}
	}
	script := recipe + `
import json, sys
cases = json.load(sys.stdin)
print(json.dumps([verify(c["secret"].encode(), c["timestamp"], c["signature"], c["body"].encode(), c["now"]) for c in cases]))
`
	path := filepath.Join(t.TempDir(), "verify.py")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(cases)
	cmd := exec.Command(py, path)
	cmd.Stdin = bytes.NewReader(in)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s\n%s", err, outb, script)
	}
	var got []bool
	if err := json.Unmarshal(outb, &got); err != nil {
		t.Fatalf("python output %q: %v", outb, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Python verify results (-want +got):\n%s", diff)
	}
}

// docPythonRecipe extracts the Python verification code from doc.go: the indented block from
// "import hashlib" up to the FastAPI app.
func docPythonRecipe(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	in := false
	for line := range strings.SplitSeq(string(src), "\n") {
		code, isCode := strings.CutPrefix(line, "//\t")
		if line == "//" {
			code, isCode = "", true
		}
		if !isCode {
			if in {
				break
			}
			continue
		}
		if strings.HasPrefix(code, "import hashlib") {
			in = true
		}
		if !in {
			continue
		}
		if strings.HasPrefix(code, "app = FastAPI()") {
			return b.String()
		}
		b.WriteString(code + "\n")
	}
	t.Fatal("doc.go: Python recipe (import hashlib ... app = FastAPI()) not found")
	return ""
}

// TestPythonOriginalSender: the original handler's requests.post pattern (no event_id, no
// signature) against the Go receiver; a resend of the same callbacks is deduped.
func TestPythonOriginalSender(t *testing.T) {
	py := venvPython(t)
	store, app := NewMemoryStore(), newApplied()
	srv := startReceiver(t, HandlerConfig{Store: store, OnCallback: app.hook})
	for round := range 2 {
		out, err := exec.Command(py, "testdata/python_pattern.py", srv.URL+"/receive-task-result", "5", "py-sender").CombinedOutput()
		if err != nil {
			t.Fatalf("python_pattern.py: %v\n%s", err, out)
		}
		var res struct{ Count, OK, Failed int }
		if err := json.Unmarshal(out, &res); err != nil || res.OK != 5 {
			t.Fatalf("round %d: python_pattern.py said %s (%v)", round, out, err)
		}
	}
	st, _ := store.Stats(context.Background())
	if st.Unique != 5 || st.Duplicates != 5 {
		t.Errorf("store stats %+v, want 5 unique and 5 duplicates", st)
	}
	for i := range 5 {
		id := fmt.Sprintf("py-sender-%d", i)
		cbs, err := store.ByTaskID(context.Background(), id)
		if err != nil || len(cbs) != 1 || cbs[0].EventID != EventID(id, "success") || app.counts()[EventID(id, "success")] != 1 {
			t.Errorf("task %s: stored %+v, %v; applied %d", id, cbs, err, app.counts()[EventID(id, "success")])
		}
	}
}

// TestPythonAndGoSendersDedupeTogether: the same five outcomes sent by this package's sender
// (a Go worker: Celery ids, derived event ids) and by the original Python pattern (business ids
// only, no event id) are stored once each, whichever worker ran the task: work restored after
// a crash may run on the other kind.
func TestPythonAndGoSendersDedupeTogether(t *testing.T) {
	py := venvPython(t)
	_, pool := startRedis(t)
	store, app := NewMemoryStore(), newApplied()
	srv := startReceiver(t, HandlerConfig{Store: store, Secret: nil, OnCallback: app.hook})
	ob := newTestOutbox(t, pool, srv.URL+"/receive-task-result")
	cfg := fastDispatch()
	cfg.Secret = nil
	runDispatcher(t, ob, cfg)
	evs := make([]Event, 5)
	for i := range evs {
		evs[i] = Event{CeleryTaskID: fmt.Sprintf("celery-mixed-%d", i), TaskID: fmt.Sprintf("py-mixed-%d", i),
			TaskName: "tasks.process_task", Status: StatusSuccess, Result: map[string]any{"index": i}}
	}
	enqueueAll(t, ob, evs)
	waitDrained(t, ob, 20*time.Second)
	out, err := exec.Command(py, "testdata/python_pattern.py", srv.URL+"/receive-task-result", "5", "py-mixed").CombinedOutput()
	if err != nil {
		t.Fatalf("python_pattern.py: %v\n%s", err, out)
	}
	st, _ := store.Stats(context.Background())
	if st.Unique != 5 || st.Duplicates != 5 {
		t.Errorf("store stats %+v, want 5 unique and 5 duplicates", st)
	}
	for _, ev := range evs {
		cbs, err := store.ByTaskID(context.Background(), ev.TaskID)
		if err != nil || len(cbs) != 1 || cbs[0].CeleryTaskID != ev.CeleryTaskID || app.counts()[ev.ID()] != 1 {
			t.Errorf("task %s: stored %+v, %v; applied %d", ev.TaskID, cbs, err, app.counts()[ev.ID()])
		}
	}
}
