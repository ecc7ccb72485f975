package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/gomodule/redigo/redis"
)

// env is a getenv over a map.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// testConfig is the configuration for a test on r: tasks take no time, callbacks in memory.
func testConfig(t testing.TB, r *testRedis, extra env) Config {
	t.Helper()
	e := env{"REDIS_URL": r.url(0), "TASK_SLEEP": "0", "CALLBACK_DB": ":memory:"}
	for k, v := range extra {
		e[k] = v
	}
	cfg, err := ConfigFromEnv(e.get)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testDeps opens the pools cfg names and closes them when the test ends.
func testDeps(t testing.TB, cfg Config) Deps {
	t.Helper()
	d, closePools, err := OpenDeps(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closePools() })
	return d
}

// call sends one request to h and returns the status and body.
func call(t testing.TB, h http.Handler, method, path string, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// decode unmarshals body into a T, failing the test when it cannot.
func decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, body, err)
	}
	return v
}

// submit posts body to the API and returns the accepted ids.
func submit(t testing.TB, h http.Handler, body string) SubmitResponse {
	t.Helper()
	code, out := call(t, h, http.MethodPost, "/submit-task", body)
	if code != http.StatusOK {
		t.Fatalf("submit %s: %d %s", body, code, out)
	}
	return decode[SubmitResponse](t, out)
}

// status reads /task-status/{id}.
func status(t testing.TB, h http.Handler, id string) (int, TaskStatus) {
	t.Helper()
	code, out := call(t, h, http.MethodGet, "/task-status/"+id, "")
	if code != http.StatusOK {
		return code, TaskStatus{}
	}
	return code, decode[TaskStatus](t, out)
}

// waitStatus polls until id's status is want.
func waitStatus(t testing.TB, h http.Handler, id, want string) TaskStatus {
	t.Helper()
	var st TaskStatus
	eventually(t, 20*time.Second, func() (bool, string) {
		var code int
		code, st = status(t, h, id)
		return code == http.StatusOK && st.Status == want, "status " + st.Status + ", want " + want
	})
	return st
}

// startWorker runs the Go worker until the test ends (or the returned stop is called), checking
// that it drains without error.
func startWorker(t testing.TB, cfg Config, deps Deps) (stop func()) {
	t.Helper()
	w, d, err := NewWorker(context.Background(), cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWorker(ctx, context.Background(), w, d, 10*time.Second, nil) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunWorker: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// startReceiver serves a receiver on a real port (the dispatcher needs one) with an in-memory
// store, and points cfg's callbacks at it.
func startReceiver(t testing.TB, cfg *Config) (*callback.MemoryStore, http.Handler) {
	t.Helper()
	store := callback.NewMemoryStore()
	e, err := NewReceiver(*cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	cfg.CallbackURL = srv.URL + "/receive-task-result"
	return store, e
}

// queued is the length of the celery queue in db 0.
func queued(t testing.TB, r *testRedis) int {
	t.Helper()
	n, err := redis.Int(r.do(0, "LLEN", Queue))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// gate is a Deps.Sleep that holds every task until open is called.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gate) sleep(ctx context.Context, _ time.Duration) error {
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) open() { close(g.release) }

// httpGet builds a GET request and a recorder for it.
func httpGet(path string) (*http.Request, *httptest.ResponseRecorder) {
	return httptest.NewRequest(http.MethodGet, path, nil), httptest.NewRecorder()
}
