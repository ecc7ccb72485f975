package rig

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/internal/celerytest"
	"github.com/google/go-cmp/cmp"
)

// TestReceiver drives the receiver with a secret and the SQLite store: signatures are required,
// duplicates suppressed, callbacks found by either id, counted, and kept across a restart.
func TestReceiver(t *testing.T) {
	ctx := context.Background()
	cfg, err := ConfigFromEnv(env{"CALLBACK_SECRET": "s3cret", "CALLBACK_DB": filepath.Join(t.TempDir(), "cb.db")}.get)
	if err != nil {
		t.Fatal(err)
	}
	store, closeStore, err := OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs celerytest.SyncBuffer
	e, err := NewReceiver(cfg, store, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string, signed bool) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/receive-task-result", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if signed {
			ts := time.Now().Unix()
			req.Header.Set(callback.HeaderTimestamp, strconv.FormatInt(ts, 10))
			req.Header.Set(callback.HeaderSignature, callback.Sign([]byte(cfg.CallbackSecret), ts, []byte(body)))
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	ok := `{"task_id": "b1", "celery_task_id": "c1", "status": "success", "result": {"x": 1}, "error": null}`
	bad := `{"task_id": "b2", "celery_task_id": "c2", "status": "failed", "result": null, "error": "boom"}`
	steps := []struct {
		name   string
		body   string
		signed bool
		code   int
	}{
		{"unsigned", ok, false, 401},
		{"signed", ok, true, 200},
		{"duplicate", ok, true, 200},
		{"failure", bad, true, 200},
		{"not a callback", `{"task_id": "b3"}`, true, 400},
	}
	for _, s := range steps {
		if code, body := post(s.body, s.signed); code != s.code {
			t.Errorf("%s: %d %s, want %d", s.name, code, body, s.code)
		}
	}
	// One log line per new callback, as the original printed them; none for the duplicate.
	if n := strings.Count(logs.String(), `msg="callback received"`); n != 2 {
		t.Errorf("%d \"callback received\" log lines, want 2:\n%s", n, logs.String())
	}
	if code, _ := call(t, e, http.MethodGet, "/receive-task-result", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /receive-task-result: %d, want 405", code)
	}
	for _, id := range []string{"b1", "c1"} {
		code, out := call(t, e, http.MethodGet, "/callbacks/"+id, "")
		got := decode[TaskCallbacks](t, out)
		if code != 200 || len(got.Callbacks) != 1 || got.Callbacks[0].CeleryTaskID != "c1" || got.TaskID != id {
			t.Errorf("/callbacks/%s: %d %s", id, code, out)
		}
	}
	if code, _ := call(t, e, http.MethodGet, "/callbacks/nope", ""); code != http.StatusNotFound {
		t.Errorf("/callbacks/nope: %d, want 404", code)
	}
	if code, _ := call(t, e, http.MethodGet, "/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	want := CallbackStats{Received: 3, Unique: 2, Duplicates: 1, ByStatus: map[string]int64{"success": 1, "failed": 1}}
	checkStats := func(e http.Handler, when string) {
		t.Helper()
		_, out := call(t, e, http.MethodGet, "/callbacks/stats", "")
		if diff := cmp.Diff(want, decode[CallbackStats](t, out)); diff != "" {
			t.Errorf("stats %s (-want +got):\n%s", when, diff)
		}
	}
	checkStats(e, "")

	// Restart on the same file: SQLite keeps the callbacks and the duplicate count.
	if err := closeStore(); err != nil {
		t.Fatal(err)
	}
	store, closeStore, err = OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	e, err = NewReceiver(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkStats(e, "after a restart")
}

func TestNewReceiverNilStore(t *testing.T) {
	cfg, err := ConfigFromEnv(env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewReceiver(cfg, nil, nil); err == nil {
		t.Error("NewReceiver with a nil store: no error")
	}
}
