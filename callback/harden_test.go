package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPayloadWritesHTMLCharactersRaw: '<', '>' and '&' travel as themselves. Escaped as \u003c
// (6 bytes each), a 180 KB result of '<' became a 1 MB callback that the receiver refused (413)
// and the outbox dead-lettered.
func TestPayloadWritesHTMLCharactersRaw(t *testing.T) {
	content := strings.Repeat("<>&", 60_000) // 180 KB
	for _, result := range []any{
		map[string]any{"content": content},
		json.RawMessage(`{"content":"` + content + `"}`),
	} {
		ev := Event{CeleryTaskID: "c-1", TaskID: "biz-1", Status: StatusSuccess, Result: result}
		body, err := ev.payload(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(body, []byte(`\u003c`)) || bytes.Contains(body, []byte(`\u0026`)) {
			t.Fatalf("%T: payload HTML-escapes: %.80s", result, body)
		}
		if len(body) > len(content)+400 {
			t.Errorf("%T: payload is %d bytes for %d bytes of content", result, len(body), len(content))
		}
		var back struct {
			Result struct{ Content string } `json:"result"`
		}
		if err := json.Unmarshal(withAttempt(body, 1), &back); err != nil || back.Result.Content != content {
			t.Errorf("%T: payload does not decode back: %v", result, err)
		}
	}
}

// TestGoAndPythonCallbacksDedupeTogether: one outcome of one task, posted once by a Go worker
// (event id derived by this package) and once by a Python worker with the original payload (no
// event id), is stored once, whichever comes first.
func TestGoAndPythonCallbacksDedupeTogether(t *testing.T) {
	const celeryID, businessID = "8a4f6f0e-3b7e-4a57-9a43-7c0e0f1f9b11", "0d9793a1-biz"
	goBody, err := Event{CeleryTaskID: celeryID, TaskID: businessID, TaskName: "tasks.process_task",
		Status: StatusSuccess, Result: map[string]any{"ok": true}}.payload(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	goBody = withAttempt(goBody, 1)
	// callback/testdata/python_pattern.py's send_callback: requests' json= (", " and ": "
	// separators), the business id as task_id, a local "%Y-%m-%d %H:%M:%S" timestamp.
	pyBody := []byte(`{"task_id": "` + businessID + `", "status": "success", "result": {"ok": true}, "error": null, "timestamp": "2026-12-04 19:20:00"}`)
	for _, order := range [][2][]byte{{goBody, pyBody}, {pyBody, goBody}} {
		store := NewMemoryStore()
		srv := startReceiver(t, HandlerConfig{Store: store})
		for i, body := range order {
			code, rep, _ := post(t, srv.URL, body, nil, time.Time{}, nil)
			if code != http.StatusOK || rep.Duplicate != (i == 1) {
				t.Fatalf("post %d answered %d %+v", i, code, rep)
			}
		}
		cbs, err := store.ByTaskID(context.Background(), businessID)
		if err != nil || len(cbs) != 1 {
			t.Fatalf("stored %d callbacks (%v), want 1: %+v", len(cbs), err, cbs)
		}
	}
}

// TestReadBodyDoesNotTrustContentLength: memory follows the bytes that arrived, not the
// announced Content-Length (200 connections announcing 1 MiB each grew the receiver by 200 MiB).
func TestReadBodyDoesNotTrustContentLength(t *testing.T) {
	const announced = 1 << 20
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", 110)))
	req.ContentLength = announced
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 4 {
		_, _ = readBody(httptest.NewRecorder(), req, announced)
		req.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 110)))
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4*(initialBodyBuffer+64<<10) {
		t.Errorf("4 reads of 110 bytes announced as %d allocated %d bytes", announced, grew)
	}
}

// TestReceiverBoundsRequestsInProgress: with MaxConcurrent requests stuck sending their bodies,
// the next one is answered 503 with Retry-After after QueueTimeout instead of being read too.
func TestReceiverBoundsRequestsInProgress(t *testing.T) {
	srv := startReceiver(t, HandlerConfig{MaxConcurrent: 2, QueueTimeout: 100 * time.Millisecond})
	addr := strings.TrimPrefix(srv.URL, "http://")
	for range 2 { // two slow clients: headers sent, body announced, never sent
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // let the server take both
	start := time.Now()
	code, _, h := post(t, srv.URL, []byte(`{"task_id":"t","status":"success"}`), nil, time.Time{}, nil)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("third request answered %d (Retry-After %q), want 503 with Retry-After", code, h.Get("Retry-After"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("503 took %v", d)
	}
}

// TestReceiverConcurrentBurst: 200 parallel callbacks through 8 slots all end stored (the rest
// wait their turn), none lost or stored twice.
func TestReceiverConcurrentBurst(t *testing.T) {
	store := NewMemoryStore()
	srv := startReceiver(t, HandlerConfig{Store: store, MaxConcurrent: 8})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Appendf(nil, `{"task_id":"burst-%d","status":"success"}`, i)
			resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("callback %d answered %d", i, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if st, _ := store.Stats(context.Background()); st.Unique != 200 {
		t.Errorf("stored %d of 200", st.Unique)
	}
}
