package rig

// The peers these tests drive: a redis-server per test on a free loopback port, started the way
// callback/internal/testenv does (which examples/ cannot import), and the project venv's Python
// with Celery. Without them the tests skip, saying how to get them; with CI=true they fail.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (run `make test`, which installs every peer)"
	if inCI() {
		t.Fatalf("CI=true and a peer is missing: %s", msg)
	}
	t.Skip(msg)
}

// testRedis is a redis-server owned by one test.
type testRedis struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

func startRedis(t testing.TB) *testRedis {
	t.Helper()
	bin := os.Getenv("CELERYBRIDGE_REDIS_SERVER")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			missing(t, "redis-server not found on PATH")
		}
	}
	dir := t.TempDir()
	r := &testRedis{t: t, port: freePort(t)}
	r.cmd = exec.Command(bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(r.stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := redis.Dial("tcp", r.addr()); err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return r
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server on %s did not answer: %s", r.addr(), log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *testRedis) addr() string      { return fmt.Sprintf("127.0.0.1:%d", r.port) }
func (r *testRedis) url(db int) string { return fmt.Sprintf("redis://%s/%d", r.addr(), db) }

// stop kills the server and waits for it; later calls do nothing.
func (r *testRedis) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// do runs one command on a fresh connection to db.
func (r *testRedis) do(db int, cmd string, args ...any) (any, error) {
	c, err := redis.Dial("tcp", r.addr(), redis.DialDatabase(db))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// keys lists the keys of db.
func (r *testRedis) keys(db int) []string {
	r.t.Helper()
	ks, err := redis.Strings(r.do(db, "KEYS", "*"))
	if err != nil {
		r.t.Fatalf("KEYS: %v", err)
	}
	return ks
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// venvPython is the project venv's interpreter (CELERYBRIDGE_VENV, else <repo>/.venv), checked to
// import the originals' dependencies.
func venvPython(t testing.TB) string {
	t.Helper()
	venv := os.Getenv("CELERYBRIDGE_VENV")
	if venv == "" {
		venv = filepath.Join(repoRoot(t), ".venv")
	}
	py := filepath.Join(venv, "bin", "python")
	out, err := exec.Command(py, "-c", "import celery, redis, fastapi, uvicorn, requests").CombinedOutput()
	if err != nil {
		missing(t, "%s cannot import celery, redis, fastapi, uvicorn, requests: %v %s", py, err, out)
	}
	return py
}

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// eventually polls cond every 10 ms until it holds, failing the test after timeout with cond's
// last description of what it saw.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %s", timeout, saw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
