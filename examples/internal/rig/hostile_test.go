package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/labstack/echo/v4"
)

// Hostile and broken clients against both services, on loopback, each case bounded in time
// (short configured timeouts) and count.

// serveLoopback serves e on a loopback port until the test ends and returns its base URL.
func serveLoopback(t testing.TB, e *echo.Echo) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, e, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// shortLimits makes every HTTP limit short enough for a test to see it act.
var shortLimits = env{"HEADER_TIMEOUT": "0.3", "READ_TIMEOUT": "0.6", "IDLE_TIMEOUT": "0.6",
	"MAX_HEADER_BYTES": "4096", "MAX_CONCURRENT": "2", "REDIS_TIMEOUT": "0.3"}

// both starts the API and the receiver with cfg on loopback ports.
func both(t *testing.T, cfg Config) map[string]string {
	t.Helper()
	api, err := NewAPI(cfg, testDeps(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	recv, err := NewReceiver(cfg, callback.NewMemoryStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"api /submit-task": serveLoopback(t, api) + "/submit-task",
		"receiver /receive-task-result": serveLoopback(t, recv) + "/receive-task-result"}
}

// closedWithin reports whether the server closes c within d (it may answer first).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestSlowClients: a client trickling its headers, or announcing a body it does not send, is cut
// off by the header and read timeouts (both services held such connections past 30 s).
func TestSlowClients(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, shortLimits)
	for name, target := range both(t, cfg) {
		u, _ := url.Parse(target)
		t.Run(name+" trickled headers", func(t *testing.T) {
			c, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() { // one byte every 50 ms, for up to 5 s
				for _, b := range []byte("POST " + u.Path + " HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)) {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			if !closedWithin(c, 3*time.Second) {
				t.Error("connection still open after 3 s of trickled headers")
			}
		})
		t.Run(name+" lying Content-Length", func(t *testing.T) {
			c, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"task_id\":", u.Path)
			if !closedWithin(c, 3*time.Second) {
				t.Error("connection still open 3 s after an unfinished body")
			}
		})
		t.Run(name+" huge header", func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Big", strings.Repeat("h", 64<<10))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("64 KiB header answered %d, want 431", resp.StatusCode)
			}
		})
		t.Run(name+" bodies held at once are bounded", func(t *testing.T) {
			for range cfg.MaxConcurrent { // hold every slot with an unfinished body
				c, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", u.Path)
			}
			time.Sleep(50 * time.Millisecond)
			resp, err := http.Post(target, "application/json", strings.NewReader(`{"task_id":"t","status":"success"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("request beyond MaxConcurrent answered %d, want 503 with Retry-After", resp.StatusCode)
			}
		})
	}
}

// TestAPIClientErrors: client errors are 4xx with a plain message, never internal error text;
// a JSON body must say it is JSON.
func TestAPIClientErrors(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	nest := func(n int) string {
		return `{"d": ` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	for _, tt := range []struct {
		name, body, contentType string
		code                    int
	}{
		{"nested 1500 levels", nest(1500), "application/json", 400},
		{"nested 10001 levels", nest(10001), "application/json", 400},
		{"nested just past MaxDataDepth", nest(MaxDataDepth), "application/json", 400},
		{"text/plain", `{"a": 1}`, "text/plain", 415},
		{"form", `a=1`, "application/x-www-form-urlencoded", 415},
		{"no content type", `{"a": 1}`, "", 415},
		{"JSON with charset", `{"a": 1}`, "application/json; charset=utf-8", 200},
		{"nested within MaxDataDepth", nest(MaxDataDepth - 1), "application/json", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/submit-task", strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("answered %d %.200s, want %d", rec.Code, rec.Body.String(), tt.code)
			}
			if strings.Contains(rec.Body.String(), "celerycompat") || strings.Contains(rec.Body.String(), "rig:") {
				t.Errorf("answer carries internal error text: %s", rec.Body.String())
			}
		})
	}
}

// TestNoInternalTextWhenRedisDown: a 503 says Redis is unavailable, not how the dial failed.
func TestNoInternalTextWhenRedisDown(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	r.stop()
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/submit-task", `{"a": 1}`},
		{http.MethodGet, "/task-status/abc", ""},
		{http.MethodGet, "/healthz", ""},
	} {
		code, out := call(t, api, c.method, c.path, c.body)
		if code != 503 || strings.Contains(string(out), "dial") || strings.Contains(string(out), "refused") || strings.Contains(string(out), "127.0.0.1") {
			t.Errorf("%s %s: %d %s", c.method, c.path, code, out)
		}
	}
}

// TestHungRedis: with Redis paused (SIGSTOP), /healthz answers 503 within a second, a status
// read and a submission answer 503 within their Redis deadlines, and the submission the client
// was told failed leaves no key once Redis resumes.
func TestHungRedis(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, env{"REDIS_TIMEOUT": "0.3"})
	base := serveLoopback(t, newTestAPIEcho(t, cfg))
	client := &http.Client{Timeout: 5 * time.Second}
	post := func() (int, []byte) {
		resp, err := client.Post(base+"/submit-task", "application/json", strings.NewReader(`{"a": 1}`))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, out := post(); code != 200 { // warms the pools
		t.Fatalf("warm-up: %d %s", code, out)
	}
	before := len(r.keys(0))

	pid := r.r.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	for _, c := range []struct {
		path  string
		limit time.Duration
	}{{"/healthz", time.Second}, {"/task-status/abc", 1500 * time.Millisecond}} {
		start := time.Now()
		resp, err := client.Get(base + c.path)
		if err != nil {
			t.Errorf("GET %s with Redis hung: %v after %v", c.path, err, time.Since(start))
			continue
		}
		resp.Body.Close()
		if d := time.Since(start); resp.StatusCode != 503 || d > c.limit {
			t.Errorf("GET %s with Redis hung: %d after %v, want 503 within %v", c.path, resp.StatusCode, d, c.limit)
		}
	}
	start := time.Now()
	if code, out := post(); code != 503 || time.Since(start) > 2*time.Second {
		t.Errorf("POST with Redis hung: %d %s after %v, want 503 within 2 s", code, out, time.Since(start))
	}
	resume()
	eventually(t, 5*time.Second, func() (bool, string) {
		_, err := r.do(0, "PING")
		return err == nil, fmt.Sprint(err)
	})
	time.Sleep(300 * time.Millisecond) // let Redis run what was waiting in its sockets
	if after := r.keys(0); len(after) != before {
		t.Errorf("after a 503 and Redis resuming, %d keys where there were %d: %q", len(after), before, after)
	}
}

// newTestAPIEcho is NewAPI for a test, on its own pools.
func newTestAPIEcho(t testing.TB, cfg Config) *echo.Echo {
	t.Helper()
	e, err := NewAPI(cfg, testDeps(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRedisRestart: right after Redis restarts, the pooled connections from before do not fail
// requests (33 of the first 38 POSTs answered 503 "EOF") nor /healthz.
func TestRedisRestart(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	var wg sync.WaitGroup
	for range 20 { // fill the pools with idle connections
		wg.Go(func() { submit(t, api, `{"warm": true}`) })
	}
	wg.Wait()
	r.stop()
	r.r.Start()
	for i := range 38 {
		if code, out := call(t, api, http.MethodPost, "/submit-task", `{"after": "restart"}`); code != 200 {
			t.Fatalf("POST %d after the restart: %d %s", i, code, out)
		}
	}
	r.stop()
	r.r.Start()
	if code, out := call(t, api, http.MethodGet, "/healthz", ""); code != 200 {
		t.Errorf("/healthz after the restart: %d %s", code, out)
	}
}

// TestCallbackIDsReadBack: any task id that can be stored can be read back, sent
// percent-encoded, with '/', '%', ';' or spaces in it.
func TestCallbackIDsReadBack(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	store := callback.NewMemoryStore()
	recv, err := NewReceiver(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := serveLoopback(t, recv)
	for _, id := range []string{"x; PRAGMA writable_schema=1;", "a/b", "a/../b", "100%", "stats?", "id with spaces", "ünï/cödé"} {
		body, _ := json.Marshal(map[string]any{"task_id": id, "status": "success"})
		resp, err := http.Post(base+"/receive-task-result", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("store %q: %d", id, resp.StatusCode)
		}
		resp, err = http.Get(base + "/callbacks/" + url.PathEscape(id))
		if err != nil {
			t.Fatal(err)
		}
		var got TaskCallbacks
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != 200 || got.TaskID != id || len(got.Callbacks) != 1 {
			t.Errorf("read back %q: %d %+v", id, resp.StatusCode, got)
		}
	}
}

// TestAcceptedTaskGetsItsCallback: task data full of '<' that the API accepts reaches the
// receiver (it was dead-lettered: escaped, it outgrew the receiver's limit), and data whose
// callback could not fit is refused up front (413) instead of accepted and lost.
func TestAcceptedTaskGetsItsCallback(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	store, _ := startReceiver(t, &cfg)
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)
	startWorker(t, cfg, deps)

	big := fmt.Sprintf(`{"task_index": 1, "content": %q}`, strings.Repeat("<", 180_000))
	sub := submit(t, api, big)
	eventually(t, 20*time.Second, func() (bool, string) {
		cbs, _ := store.ByTaskID(context.Background(), sub.BusinessTaskID)
		return len(cbs) == 1, "no callback yet"
	})
	metricsHave(t, api, `celerybridge_callback_outbox{state="dead"} 0`)

	// Under the body limit, over what its callback could carry.
	pad := int(cfg.MaxBodyBytes) - 40
	huge := `{"task_index": 1, "content": "` + strings.Repeat("<", pad) + `"}`
	if len(huge) > int(cfg.MaxBodyBytes) {
		t.Fatalf("test body of %d bytes is over the limit", len(huge))
	}
	if code, out := call(t, api, http.MethodPost, "/submit-task", huge); code != http.StatusRequestEntityTooLarge {
		t.Errorf("%d-byte body whose callback cannot fit: %d %.200s, want 413", len(huge), code, out)
	}
	// Non-ASCII text that Python's sender writes as \uXXXX: refused when its escaped form would
	// not fit, accepted when it does.
	cjk := strings.Repeat("测", int(cfg.MaxBodyBytes)/3-100) // fits the body, not the escaped callback
	if code, _ := call(t, api, http.MethodPost, "/submit-task", `{"c": "`+cjk+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("CJK data escaping past the callback limit: %d, want 413", code)
	}
}

// TestDeadLettersShowAndReplay: a callback the dispatcher gave up on shows in /metrics and GET
// /callbacks/dead, and POST /callbacks/dead/replay delivers it.
func TestDeadLettersShowAndReplay(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	var refuse atomic.Bool
	refuse.Store(true)
	got := make(chan []byte, 10)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if refuse.Load() {
			http.Error(w, "no", http.StatusBadRequest) // not retryable: dead-lettered at once
			return
		}
		got <- b
	}))
	t.Cleanup(rcv.Close)
	cfg.CallbackURL = rcv.URL
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)
	startWorker(t, cfg, deps)
	sub := submit(t, api, `{"a": 1}`)

	var dead DeadLetters
	eventually(t, 20*time.Second, func() (bool, string) {
		code, out := call(t, api, http.MethodGet, "/callbacks/dead", "")
		dead = decode[DeadLetters](t, out)
		return code == 200 && len(dead.DeadLetters) == 1, fmt.Sprintf("%d %s", code, out)
	})
	if d := dead.DeadLetters[0]; d.TaskID != sub.BusinessTaskID || d.CeleryTaskID != sub.CeleryTaskID || d.LastStatus != 400 {
		t.Errorf("dead letter %+v", d)
	}
	metricsHave(t, api, `celerybridge_callback_outbox{state="dead"} 1`)

	refuse.Store(false)
	code, out := call(t, api, http.MethodPost, "/callbacks/dead/replay", `{}`)
	if rep := decode[ReplayResponse](t, out); code != 200 || len(rep.Replayed) != 1 || rep.Replayed[0] != dead.DeadLetters[0].EventID {
		t.Fatalf("replay: %d %s", code, out)
	}
	select {
	case b := <-got:
		if !bytes.Contains(b, []byte(sub.BusinessTaskID)) {
			t.Errorf("replayed callback %s", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("replayed callback not delivered")
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		code, out := call(t, api, http.MethodGet, "/callbacks/dead", "")
		return code == 200 && len(decode[DeadLetters](t, out).DeadLetters) == 0, string(out)
	})
	if code, out := call(t, api, http.MethodPost, "/callbacks/dead/replay", `{"event_ids": ["nope"]}`); code != 200 ||
		!strings.Contains(string(out), `"unknown":["nope"]`) {
		t.Errorf("replay of an unknown id: %d %s", code, out)
	}
}

// TestHostileBodies: a fixed set of malformed, mistyped, oversized and injection-shaped bodies
// against both services: each answers a 4xx (or 200 where the body is in fact valid) with a
// JSON error shape and no internal text, and the service stays healthy.
func TestHostileBodies(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, env{"MAX_BODY_BYTES": "65536"})
	targets := both(t, cfg)
	bodies := []string{
		``, `{`, `}`, `nul`, `{"a":1,}`, `{"a":01}`, `{"a":"\x00"}`, "\xff\xfe", `{"a":"\ud800"}`,
		`{"task_id":"x; PRAGMA writable_schema=1;","status":"success"}`,
		`{"task_id":"' OR 1=1 --","status":"failed","error":"<script>alert(1)</script>"}`,
		`{"task_id":"a\r\nX-Injected: 1","status":"success"}`,
		`{"task_id":["t"],"status":"success"}`, `{"task_id":"t","status":{"$ne":1}}`,
		`{"task_id":"t","status":"success","attempt":1e400}`, `{"n":1e400}`, `{"n":-1e-400}`,
		`{"__proto__":{"admin":true}}`, `{"reply_to":"http://169.254.169.254/","url":"file:///etc/passwd"}`,
		`{"a":"` + strings.Repeat("x", 70000) + `"}`, strings.Repeat(`{"a":`, 20000),
		`[` + strings.Repeat(`1,`, 10000) + `1]`, `{"task_id":"` + strings.Repeat("t", 300) + `","status":"success"}`,
	}
	for name, target := range targets {
		for i, body := range bodies {
			resp, err := http.Post(target, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatalf("%s body %d: %v", name, i, err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var shape struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(out, &shape); err != nil || shape.Code != resp.StatusCode || resp.StatusCode >= 500 {
				t.Errorf("%s body %d (%.40q): %d %.200s", name, i, body, resp.StatusCode, out)
			}
			for _, leak := range []string{"celerycompat", "rig:", "redis:", "sqlite", "goroutine", "panic"} {
				if strings.Contains(strings.ToLower(shape.Message), leak) {
					t.Errorf("%s body %d: message leaks %q: %s", name, i, leak, shape.Message)
				}
			}
		}
		u, _ := url.Parse(target)
		resp, err := http.Get("http://" + u.Host + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s unhealthy after the hostile bodies: %v %v", name, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}
