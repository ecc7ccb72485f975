// Package celerytest starts the real peers that integration and interop tests need, as
// net/http/httptest starts servers: a redis-server per test on a free loopback port, Python
// interpreters with Celery installed (the pinned PyPI version in the project venv and Debian's
// python3-celery 5.2.6) and real Python Celery workers. It is internal: only this module's own
// tests (_test.go files) import it, never a non-test package.
//
// On a developer machine without a peer the test is skipped with a message saying how to install
// it (`make test` installs everything). With CI=true a missing peer fails the test instead: CI must
// never pass by skipping interop.
package celerytest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// InCI reports whether the tests run under CI (CI=true), where missing peers are failures.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Missing skips the test, or fails it under CI, because a peer is not available.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (run `make test`, which installs every peer)"
	if InCI() {
		t.Fatalf("CI=true and a peer is missing: %s", msg)
	}
	t.Skip(msg)
}

// RepoRoot returns the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
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
			t.Fatal("testenv: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Redis is a redis-server process owned by one test.
type Redis struct {
	t      testing.TB
	bin    string
	dir    string
	Port   int
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	mu     sync.Mutex
}

// StartRedis starts a fresh redis-server on a free loopback port and stops it when the test ends.
// The binary comes from CELERYBRIDGE_REDIS_SERVER or PATH.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := os.Getenv("CELERYBRIDGE_REDIS_SERVER")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			Missing(t, "redis-server not found on PATH")
		}
	}
	r := &Redis{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(r.Stop)
	// The free port is only free when freePort returns: another process may take it before
	// redis-server binds it. Then our server exits at once, and we try another port.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		r.Port = FreePort(t)
		if err = r.start(); err == nil {
			return r
		}
	}
	t.Fatalf("testenv: %v", err)
	return nil
}

// Start starts (or restarts after Stop) the server on the same port and directory. It fails the
// test if the port was taken in the meantime.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("testenv: %v", err)
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	logPath := filepath.Join(r.dir, "redis.log")
	cmd := exec.Command(r.bin,
		"--port", fmt.Sprint(r.Port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--databases", "16", "--daemonize", "no",
		"--loglevel", "warning", "--logfile", logPath)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server on %s exited at start (port taken?):\n%s", r.Addr(), log)
		default:
		}
		pid, err := serverPID(r.Addr())
		if err == nil && pid == cmd.Process.Pid {
			r.cmd, r.exited = cmd, exited
			return nil
		}
		if err == nil {
			err = fmt.Errorf("port %d answered by another redis-server (pid %d)", r.Port, pid)
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server did not answer on %s: %v\n%s", r.Addr(), err, log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serverPID asks the server at addr for its process id, so that a test never talks to a server
// that another test started on a port it took first.
func serverPID(addr string) (int, error) {
	c, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	info, err := redis.String(c.Do("INFO", "server"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			var pid int
			_, err := fmt.Sscan(v, &pid)
			return pid, err
		}
	}
	return 0, fmt.Errorf("no process_id in INFO server")
}

// Stop kills the server (SIGKILL: an outage, not a graceful shutdown). Data is not persisted.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd, r.exited = nil, nil
}

// PID is the running server's process id, or 0 when it is stopped.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the redis:// URL of database db.
func (r *Redis) URL(db int) string { return fmt.Sprintf("redis://%s/%d", r.Addr(), db) }

// Pool returns a pool for database db, closed when the test ends.
func (r *Redis) Pool(db int) *redis.Pool {
	p := &redis.Pool{
		MaxIdle:     16,
		IdleTimeout: time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", r.Addr(), redis.DialDatabase(db),
				redis.DialConnectTimeout(2*time.Second))
		},
	}
	r.t.Cleanup(func() { p.Close() })
	return p
}

// Do runs one command on database db and fails the test on error.
func (r *Redis) Do(db int, cmd string, args ...any) any {
	r.t.Helper()
	c, err := redis.Dial("tcp", r.Addr(), redis.DialDatabase(db))
	if err != nil {
		r.t.Fatalf("testenv: dial: %v", err)
	}
	defer c.Close()
	v, err := c.Do(cmd, args...)
	if err != nil {
		r.t.Fatalf("testenv: %s: %v", cmd, err)
	}
	return v
}
