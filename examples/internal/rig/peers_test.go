package rig

// The peers these tests drive, from internal/celerytest: a redis-server per test on a free
// loopback port and the project venv's Python with Celery. Without them the tests skip, saying
// how to get them; with CI=true they fail.

import (
	"os/exec"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	celerytest.Missing(t, format, args...)
}

// testRedis is a redis-server owned by one test.
type testRedis struct {
	t testing.TB
	r *celerytest.Redis
}

func startRedis(t testing.TB) *testRedis {
	t.Helper()
	return &testRedis{t: t, r: celerytest.StartRedis(t)}
}

func (r *testRedis) addr() string      { return r.r.Addr() }
func (r *testRedis) url(db int) string { return r.r.URL(db) }

// stop kills the server; later calls do nothing.
func (r *testRedis) stop() { r.r.Stop() }

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

// venvPython is the project venv's interpreter, checked to import the originals' dependencies.
func venvPython(t testing.TB) string {
	t.Helper()
	py, _ := celerytest.Python(t, celerytest.CeleryNew)
	out, err := exec.Command(py, "-c", "import celery, redis, fastapi, uvicorn, requests").CombinedOutput()
	if err != nil {
		missing(t, "%s cannot import celery, redis, fastapi, uvicorn, requests: %v %s", py, err, out)
	}
	return py
}

func repoRoot(t testing.TB) string { return celerytest.RepoRoot(t) }

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
