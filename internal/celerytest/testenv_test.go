package celerytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

func TestRedisStopStart(t *testing.T) {
	r := StartRedis(t)
	if got := r.Do(3, "SET", "k", "v"); got != "OK" {
		t.Fatalf("SET = %v, want OK", got)
	}
	if got, err := redis.String(r.Do(3, "GET", "k"), nil); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	if !strings.HasPrefix(r.URL(3), "redis://127.0.0.1:") || !strings.HasSuffix(r.URL(3), "/3") {
		t.Errorf("URL(3) = %q", r.URL(3))
	}

	pool := r.Pool(3)
	c := pool.Get()
	if _, err := c.Do("PING"); err != nil {
		t.Fatalf("pool PING: %v", err)
	}
	c.Close()

	r.Stop()
	r.Stop() // idempotent
	c2, err := redis.Dial("tcp", r.Addr(), redis.DialConnectTimeout(time.Second))
	if err == nil {
		_, err = c2.Do("PING")
		c2.Close()
	}
	if err == nil {
		t.Fatal("PING after Stop succeeded; want the server gone")
	}

	r.Start()
	r.Start() // no-op while running
	// Data is not persisted across a restart: an outage loses everything.
	if got := r.Do(3, "EXISTS", "k"); got != int64(0) {
		t.Errorf("EXISTS k after restart = %v, want 0", got)
	}
	// Pooled connections from before the outage are dead; a fresh one from the same pool works.
	c = pool.Get()
	_, _ = c.Do("PING")
	c.Close()
	c = pool.Get()
	defer c.Close()
	if _, err := c.Do("PING"); err != nil {
		t.Fatalf("pool PING after restart: %v", err)
	}
}

func TestRedisPerTestIsolation(t *testing.T) {
	a, b := StartRedis(t), StartRedis(t)
	if a.Port == b.Port {
		t.Fatalf("two servers share port %d", a.Port)
	}
	a.Do(0, "SET", "only-in-a", "1")
	if got := b.Do(0, "EXISTS", "only-in-a"); got != int64(0) {
		t.Errorf("key leaked between servers: EXISTS = %v", got)
	}
}

func TestPythonPeers(t *testing.T) {
	script := filepath.Join(t.TempDir(), "hello.py")
	src := `import json, os, sys
import celery, kombu
print(json.dumps({"celery": celery.__version__, "kombu": kombu.__version__,
                  "argv": sys.argv[1:], "env": os.environ.get("TESTENV_MARK"),
                  "path_has_testdata": any(p.endswith("testdata/python") for p in sys.path)}))
`
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, peer := range Peers {
		t.Run(string(peer), func(t *testing.T) {
			py, version := Python(t, peer)
			if !filepath.IsAbs(py) {
				t.Errorf("Python(%s) = %q, want an absolute path", peer, py)
			}
			switch peer {
			case CeleryOld:
				if !strings.HasPrefix(version, "5.2.") {
					t.Errorf("old peer celery = %s, want 5.2.x", version)
				}
			case CeleryNew:
				if !strings.HasPrefix(version, "5.") || strings.HasPrefix(version, "5.2.") {
					t.Errorf("new peer celery = %s, want a newer 5.x", version)
				}
			}
			out := RunPython(t, peer, []string{"TESTENV_MARK=x"}, time.Minute, script, "a", "b c")
			var got struct {
				Celery, Kombu string
				Argv          []string
				Env           string
				PathHasTD     bool `json:"path_has_testdata"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("script output %q: %v", out, err)
			}
			if got.Celery != version {
				t.Errorf("script saw celery %s, Python() said %s", got.Celery, version)
			}
			if len(got.Argv) != 2 || got.Argv[0] != "a" || got.Argv[1] != "b c" {
				t.Errorf("argv = %q", got.Argv)
			}
			if got.Env != "x" {
				t.Errorf("extra env not passed: %q", got.Env)
			}
			if !got.PathHasTD {
				t.Error("testdata/python is not on PYTHONPATH")
			}

			// A failing script reports its error output.
			bad := filepath.Join(t.TempDir(), "bad.py")
			if err := os.WriteFile(bad, []byte("import sys\nsys.stderr.write('boom')\nsys.exit(3)\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := RunPythonErr(t, peer, nil, time.Minute, bad)
			if err == nil || !strings.Contains(string(out), "boom") {
				t.Errorf("RunPythonErr(bad) = %q, %v; want an error with the stderr text", out, err)
			}
		})
	}
}

// TestCapappImports checks that the interop app in testdata/python loads on both peers, with its
// tasks registered under the names the Go tests use. Nothing connects to the (unused) broker.
func TestCapappImports(t *testing.T) {
	script := filepath.Join(t.TempDir(), "names.py")
	src := "import json, capapp\nprint(json.dumps(sorted(n for n in capapp.app.tasks if n.startswith('cap.'))))\n"
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{"cap.add", "cap.echo", "cap.fail", "cap.fail_value", "cap.on_err", "cap.on_err3", "cap.record",
		"cap.record_sleep", "cap.retry_me", "cap.sleep", "cap.tsum"}
	for _, peer := range Peers {
		t.Run(string(peer), func(t *testing.T) {
			out := RunPython(t, peer, []string{"BROKER_URL=redis://127.0.0.1:1/0", "BACKEND_URL=redis://127.0.0.1:1/1"},
				time.Minute, script)
			var got []string
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("tasks = %v, want %v", got, want)
			}
		})
	}
}

// A server whose port is already in use must not be mistaken for the one holding it.
func TestStartOnTakenPort(t *testing.T) {
	a := StartRedis(t)
	b := &Redis{t: t, bin: a.bin, dir: t.TempDir(), Port: a.Port}
	defer b.Stop()
	if err := b.start(); err == nil {
		t.Fatal("start on a port held by another redis-server succeeded")
	}
	// a is untouched.
	if got := a.Do(0, "PING"); got != "PONG" {
		t.Errorf("PING a = %v", got)
	}
}
