package celerytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// PyWorker is a real Python Celery worker (testdata/python/worker.py running the capapp tasks).
type PyWorker struct {
	t        testing.TB
	cmd      interface{ Wait() error }
	pid      int
	Hostname string
	Version  string
	events   chan map[string]any
	exited   chan struct{}
	stderr   string
}

// StartPyWorker starts a Python worker of peer on brokerURL/backendURL and waits until it is
// ready. env adds environment (CAP_* settings of capapp.py); args go to worker.py (e.g.
// "--hostname", "py1@%h", "--prefetch", "4"). Stop it with Terminate (warm) or Kill (crash); the
// test's cleanup kills it.
func StartPyWorker(t testing.TB, peer Peer, brokerURL, backendURL string, env []string, args ...string) *PyWorker {
	t.Helper()
	_, version := Python(t, peer)
	logPath := filepath.Join(t.TempDir(), "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	env = append([]string{"BROKER_URL=" + brokerURL, "BACKEND_URL=" + backendURL}, env...)
	cmd := PythonCmd(t, peer, env, "worker.py", args...)
	cmd.Stderr = logFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start python worker: %v", err)
	}
	w := &PyWorker{t: t, cmd: cmd, pid: cmd.Process.Pid, Version: version, stderr: logPath,
		events: make(chan map[string]any, 16), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				select {
				case w.events <- ev:
				default:
				}
			}
		}
	}()
	go func() { _ = cmd.Wait(); logFile.Close(); close(w.exited) }()
	t.Cleanup(w.Kill)
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev := <-w.events:
			if ev["event"] == "ready" {
				w.Hostname, _ = ev["hostname"].(string)
				return w
			}
		case <-w.exited:
			t.Fatalf("testenv: python worker exited before it was ready:\n%s", w.Log())
		case <-deadline:
			w.Kill()
			t.Fatalf("testenv: python worker not ready after 60s:\n%s", w.Log())
		}
	}
}

// Pid is the worker's main process id.
func (w *PyWorker) Pid() int { return w.pid }

// Log returns what the worker wrote to stderr (its logs).
func (w *PyWorker) Log() string {
	b, _ := os.ReadFile(w.stderr)
	return string(b)
}

// Kill sends SIGKILL to the worker's process group member (a crash) and waits for it to exit.
func (w *PyWorker) Kill() {
	_ = syscall.Kill(w.pid, syscall.SIGKILL)
	<-w.exited
}

// Terminate sends SIGTERM (Celery's warm shutdown) and waits up to timeout for the exit.
func (w *PyWorker) Terminate(timeout time.Duration) error {
	_ = syscall.Kill(w.pid, syscall.SIGTERM)
	select {
	case <-w.exited:
		return nil
	case <-time.After(timeout):
		w.Kill()
		return fmt.Errorf("python worker did not stop within %v", timeout)
	}
}
