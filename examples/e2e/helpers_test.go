package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// binDir holds the built services; TestMain makes and removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "celerybridge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	celerytest.StopSharedRabbitMQ()
	os.RemoveAll(dir)
	os.Exit(code)
}

// --- peers -----------------------------------------------------------------------------------

// missing skips the test, or fails it under CI, because a peer is not available.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	celerytest.Missing(t, format, args...)
}

// repoRoot is the module root (the directory holding go.mod).
func repoRoot(t testing.TB) string { return celerytest.RepoRoot(t) }

// venv returns the venv directory with celery, fastapi, uvicorn and requests, or skips.
func venv(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CELERYBRIDGE_VENV")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), ".venv")
	}
	py := filepath.Join(dir, "bin", "python")
	out, err := exec.Command(py, "-c", "import celery, fastapi, uvicorn, requests; print(celery.__version__)").CombinedOutput()
	if err != nil {
		missing(t, "no Python venv with celery, fastapi, uvicorn and requests at %s (`make setup` makes it; CELERYBRIDGE_VENV names another): %v %s",
			dir, err, bytes.TrimSpace(out))
	}
	return dir
}

// pythonDir is examples/python.
func pythonDir(t testing.TB) string { return filepath.Join(repoRoot(t), "examples", "python") }

var (
	buildOnce sync.Once
	buildErr  error
)

// bin returns the path of a built service ("main_api", "worker", "callback_receiver",
// "loadtest", "demo"). The first call builds all of them.
func bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-trimpath", "-o", binDir+string(filepath.Separator),
			"./examples/main_api", "./examples/worker", "./examples/callback_receiver", "./examples/loadtest", "./examples/demo")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// --- redis-server ----------------------------------------------------------------------------

// redisServer is a redis-server process owned by one test (celerytest.StartRedis).
type redisServer struct{ *celerytest.Redis }

func startRedis(t testing.TB) *redisServer { t.Helper(); return &redisServer{celerytest.StartRedis(t)} }

// do runs one command on database 0 and fails the test on error.
func (r *redisServer) do(cmd string, args ...any) any { return r.Do(0, cmd, args...) }

func freePort(t testing.TB) int { return celerytest.FreePort(t) }

// --- processes -------------------------------------------------------------------------------

// rigVars are the variables the services read; the tests set them explicitly, so none leaks in
// from the developer's shell.
var rigVars = []string{"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "RESULT_URL", "CALLBACK_URL",
	"CALLBACK_SECRET", "TASK_SLEEP", "CONCURRENCY", "FAIL_EVERY", "PORT", "CALLBACK_DB", "MAX_BODY_BYTES",
	"RESULT_EXPIRES", "SHUTDOWN_TIMEOUT", "WARM_SHUTDOWN_TIMEOUT", "HOST", "VISIBILITY_TIMEOUT", "API_URL", "RECEIVER_URL", "TOTAL_TASKS", "SUBMIT_CONCURRENCY",
	"VIRTUAL_ENV", "PYTHONPATH"}

// environ is os.Environ without rigVars, plus vars (NAME=value), plus unbuffered Python output
// and no .pyc files in the tree.
func environ(vars ...string) []string {
	drop := map[string]bool{}
	for _, v := range rigVars {
		drop[v] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !drop[name] {
			env = append(env, kv)
		}
	}
	env = append(env, "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	return append(env, vars...)
}

// proc is a service process (and its children: it leads its own process group).
type proc struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProc starts argv in dir with env, output to a log file in the test's temp dir. It is
// stopped (SIGTERM, then SIGKILL after 15 s) when the test ends; the log tail is printed when the
// test failed.
func startProc(t testing.TB, name, dir string, env []string, argv ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, logPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", name, p.logPath, p.tail(40))
		}
	})
	return p
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) { _ = syscall.Kill(-p.cmd.Process.Pid, sig) }

// stop ends the process gracefully: SIGTERM to its group, SIGKILL after 15 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not stop within 15 s of SIGTERM; killing it", p.name)
		p.kill()
	}
}

// kill ends the process group with SIGKILL and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// log returns the process output so far.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitLog waits until the output contains s.
func (p *proc) waitLog(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.log(), s) {
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, s, p.tail(40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %v:\n%s", p.name, s, timeout, p.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHTTP waits until url answers below 500 (or the process exits).
func (p *proc) waitHTTP(url string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before %s answered:\n%s", p.name, p.err, url, p.tail(40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %s did not answer within %v (%v):\n%s", p.name, url, timeout, err, p.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- HTTP ------------------------------------------------------------------------------------

// getJSON GETs url into v and returns the status.
func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// postJSON POSTs body to url and decodes the answer into v.
func postJSON(t testing.TB, url, body string, v any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("POST %s: %v: %s", url, err, raw)
		}
	}
	return resp.StatusCode
}

// lines counts the lines of a file.
func lines(t testing.TB, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		n++
	}
	return n
}
