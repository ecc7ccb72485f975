package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// post sends body to url, signed at ts with secret unless secret is nil.
func post(t testing.TB, url string, body []byte, secret []byte, ts time.Time, mutate func(*http.Request)) (int, reply, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != nil {
		req.Header.Set(HeaderTimestamp, fmt.Sprint(ts.Unix()))
		req.Header.Set(HeaderSignature, Sign(secret, ts.Unix(), body))
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var rep reply
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, raw)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, rep, resp.Header
}

func TestHandlerRejects(t *testing.T) {
	now := time.Unix(1_766_000_000, 0)
	valid := []byte(`{"task_id":"t1","status":"success","result":{"a":1},"error":null,"timestamp":"2025-12-19 12:44:01"}`)
	tests := []struct {
		name     string
		method   string
		body     []byte
		secret   []byte // signing secret; nil: unsigned
		signedAt time.Time
		mutate   func(*http.Request)
		status   int
		message  string
	}{
		{name: "GET", method: http.MethodGet, status: 405, message: "use POST"},
		{name: "PUT", method: http.MethodPut, body: valid, secret: testSecret, signedAt: now, status: 405, message: "use POST"},
		{name: "unsigned", body: valid, status: 401, message: "missing"},
		{name: "forged signature", body: valid, secret: []byte("guessed"), signedAt: now, status: 401, message: "does not match"},
		{name: "signature of another body", body: valid, secret: testSecret, signedAt: now, status: 401, message: "does not match",
			mutate: func(r *http.Request) {
				r.Header.Set(HeaderSignature, Sign(testSecret, now.Unix(), []byte(`{"task_id":"t2","status":"success"}`)))
			}},
		{name: "replayed too late", body: valid, secret: testSecret, signedAt: now.Add(-6 * time.Minute), status: 401, message: "tolerance"},
		{name: "timestamp from the future", body: valid, secret: testSecret, signedAt: now.Add(6 * time.Minute), status: 401, message: "tolerance"},
		{name: "oversized", body: bytes.Repeat([]byte(" "), 4097), secret: testSecret, signedAt: now, status: 413, message: "larger than 4096"},
		{name: "not JSON", body: []byte(`task_id=t1`), secret: testSecret, signedAt: now, status: 400, message: "body is not JSON"},
		{name: "not an object", body: []byte(`["t1"]`), secret: testSecret, signedAt: now, status: 400, message: "not an object"},
		{name: "missing task_id", body: []byte(`{"status":"success"}`), secret: testSecret, signedAt: now, status: 400, message: "task_id is missing"},
		{name: "missing status", body: []byte(`{"task_id":"t1"}`), secret: testSecret, signedAt: now, status: 400, message: "status is missing"},
		{name: "unknown status", body: []byte(`{"task_id":"t1","status":"done"}`), secret: testSecret, signedAt: now, status: 400, message: `not "done"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, app := NewMemoryStore(), newApplied()
			srv := startReceiver(t, HandlerConfig{Store: store, Secret: testSecret, MaxBodyBytes: 4096, OnCallback: app.hook,
				Clock: func() time.Time { return now }})
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			status, rep, hdr := post(t, srv.URL, tt.body, tt.secret, tt.signedAt, func(r *http.Request) {
				r.Method = method
				if tt.mutate != nil {
					tt.mutate(r)
				}
			})
			if status != tt.status || rep.Code != tt.status || !strings.Contains(rep.Message, tt.message) {
				t.Errorf("answer %d %+v, want %d with message containing %q", status, rep, tt.status, tt.message)
			}
			if status == 405 && hdr.Get("Allow") != "POST" {
				t.Errorf("Allow = %q, want POST", hdr.Get("Allow"))
			}
			if st, _ := store.Stats(context.Background()); st.Received != 0 || len(app.counts()) != 0 {
				t.Errorf("rejected request reached the store (%+v) or the application (%v)", st, app.counts())
			}
		})
	}
}

func TestHandlerAcceptsAndDedupes(t *testing.T) {
	now := time.Unix(1_766_000_000, 0)
	tests := []struct {
		name   string
		body   string
		wantID string
	}{
		{"original Python payload: event id derived from task_id and status",
			`{"task_id": "biz-1", "status": "success", "result": {"ok": true}, "error": null, "timestamp": "2025-12-19 12:44:01"}`,
			EventID("biz-1", "success")},
		{"payload with event_id",
			`{"task_id":"biz-2","status":"failed","result":null,"error":"boom","timestamp":"2025-12-19T12:44:01+08:00","celery_task_id":"c-2","task_name":"tasks.x","event_id":"` + EventID("c-2", "failed") + `","attempt":1}`,
			EventID("c-2", "failed")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, app := NewMemoryStore(), newApplied()
			srv := startReceiver(t, HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook, Clock: func() time.Time { return now }})
			for i, wantDup := range []bool{false, true, true} {
				status, rep, _ := post(t, srv.URL, []byte(tt.body), testSecret, now, nil)
				if status != 200 || rep.Code != 200 || rep.EventID != tt.wantID || rep.Duplicate != wantDup {
					t.Fatalf("request %d: answer %d %+v, want 200 for event %s, duplicate %v", i, status, rep, tt.wantID, wantDup)
				}
				if wantDup && !strings.Contains(rep.Message, "duplicate") {
					t.Errorf("duplicate answered with message %q", rep.Message)
				}
				var got, want any
				_ = json.Unmarshal(rep.ReceivedData, &got)
				_ = json.Unmarshal([]byte(tt.body), &want)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("received_data (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(map[string]int{tt.wantID: 1}, app.counts()); diff != "" {
				t.Errorf("OnCallback calls (-want +got):\n%s", diff)
			}
			st, _ := store.Stats(context.Background())
			if st.Unique != 1 || st.Duplicates != 2 || st.Received != 3 {
				t.Errorf("store stats %+v, want 1 unique and 2 duplicates", st)
			}
			cbs, err := store.ByTaskID(context.Background(), strings.Split(strings.Split(tt.body, `"task_id"`)[1], `"`)[1])
			if err != nil || len(cbs) != 1 || !cbs[0].ReceivedAt.Equal(now) || string(cbs[0].Body) != tt.body {
				t.Errorf("stored %+v, %v", cbs, err)
			}
		})
	}
}

func TestHandlerOnCallbackErrorIsRetried(t *testing.T) {
	store := NewMemoryStore()
	var mu sync.Mutex
	calls := 0
	srv := startReceiver(t, HandlerConfig{Store: store, OnCallback: func(ctx context.Context, cb Callback) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return errors.New("database is down")
		}
		return nil
	}})
	body := []byte(`{"task_id":"t1","status":"success"}`)
	if status, rep, _ := post(t, srv.URL, body, nil, time.Time{}, nil); status != 500 || strings.Contains(rep.Message, "database is down") {
		// The cause is logged; an answer carries no internal error text (issue 12, item 6).
		t.Fatalf("first answer %d %+v, want 500 without the internal error", status, rep)
	}
	if st, _ := store.Stats(context.Background()); st.Received != 0 {
		t.Fatalf("failed callback was stored: %+v", st)
	}
	if status, rep, _ := post(t, srv.URL, body, nil, time.Time{}, nil); status != 200 || rep.Duplicate {
		t.Fatalf("retry answered %d %+v, want 200 new", status, rep)
	}
	if st, _ := store.Stats(context.Background()); st.Unique != 1 || calls != 2 {
		t.Errorf("after retry: stats %+v, OnCallback calls %d; want 1 stored, 2 calls", st, calls)
	}
}

func TestHandlerConcurrentDuplicatesAppliedOnce(t *testing.T) {
	store, app := NewMemoryStore(), newApplied()
	srv := startReceiver(t, HandlerConfig{Store: store, OnCallback: app.hook})
	body := []byte(`{"task_id":"t1","status":"success","event_id":"same"}`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, rep, _ := post(t, srv.URL, body, nil, time.Time{}, nil)
			if status != 200 {
				t.Errorf("answer %d %+v", status, rep)
			}
			if !rep.Duplicate {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st, _ := store.Stats(context.Background())
	if fresh != 1 || app.counts()["same"] != 1 || st.Unique != 1 || st.Duplicates != 19 {
		t.Errorf("fresh answers %d, OnCallback %v, stats %+v; want each exactly once", fresh, app.counts(), st)
	}
}

func TestNewHandlerValidates(t *testing.T) {
	for _, cfg := range []HandlerConfig{{Tolerance: -1}, {MaxBodyBytes: -1}} {
		if _, err := NewHandler(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewHandler(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestHandlerShortBody: a body shorter than its Content-Length (a client that went away
// mid-request) is refused, not taken as the whole callback.
func TestHandlerShortBody(t *testing.T) {
	store := NewMemoryStore()
	h, err := NewHandler(HandlerConfig{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"task_id":"t","status":"success"}`
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	req.ContentLength = int64(len(body)) + 10
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "cannot read body") {
		t.Errorf("%d %s, want 400 cannot read body", rec.Code, rec.Body.String())
	}
	if st, _ := store.Stats(context.Background()); st.Received != 0 {
		t.Errorf("stored %+v", st)
	}
}
