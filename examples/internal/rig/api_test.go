package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func newTestAPI(t *testing.T, cfg Config, deps Deps) http.Handler {
	t.Helper()
	e, err := NewAPI(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// meaning decodes JSON (or re-encodes a value first) into plain maps, slices and float64s, so
// that values compare by meaning: 1.0 and 1 are equal, key order is irrelevant.
func meaning(t testing.TB, v any) any {
	t.Helper()
	raw, ok := v.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", raw, err)
	}
	return out
}

// TestTaskLifecycle follows tasks through the API while a Go worker runs them: queued (no
// worker yet), running, finished with a result or an error; both ids answer; the callbacks reach
// the receiver; /metrics counts it all.
func TestTaskLifecycle(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	store, recv := startReceiver(t, &cfg)
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)

	const data = `{"task_index": 1, "content": "测试任务1", "nested": {"f": 1.5, "l": [1, "二", null, true]}}`
	sub := submit(t, api, data)
	if sub.Code != 200 || sub.Message != MsgSubmitted || sub.BusinessTaskID == sub.CeleryTaskID {
		t.Fatalf("submit answered %+v", sub)
	}
	for _, id := range []string{sub.BusinessTaskID, sub.CeleryTaskID} {
		if err := uuid.Validate(id); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
	}
	ids := []string{sub.BusinessTaskID, sub.CeleryTaskID}

	// Queued: no worker runs yet.
	for _, id := range ids {
		_, got := status(t, api, id)
		want := TaskStatus{Code: 200, BusinessTaskID: sub.BusinessTaskID, CeleryTaskID: sub.CeleryTaskID, Status: "PENDING"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("queued status by %s (-want +got):\n%s", id, diff)
		}
	}
	metricsHave(t, api,
		`celerybridge_queue_length{queue="celery",priority="0"} 1`,
		`celerybridge_queue_length{queue="celery",priority="9"} 0`,
		`celerybridge_submissions_total{outcome="ok"} 1`,
		`celerybridge_submissions_total{outcome="failed"} 0`,
		`celerybridge_callback_outbox{state="pending"} 0`,
		`celerybridge_redis_up 1`)

	// Running: the worker holds the task in its sleep.
	g := newGate()
	deps.Sleep = g.sleep
	startWorker(t, cfg, deps)
	select {
	case <-g.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not start the task")
	}
	for _, id := range ids {
		st := waitStatus(t, api, id, "STARTED")
		if st.Worker == nil || !strings.HasPrefix(*st.Worker, "celerybridge.") || st.Result != nil || st.Error != nil {
			t.Errorf("running status by %s: %+v", id, st)
		}
	}

	// Finished.
	g.open()
	fail := submit(t, api, `{"fail": true}`)
	var wantData any
	if err := json.Unmarshal([]byte(data), &wantData); err != nil {
		t.Fatal(err)
	}
	wantResult := meaning(t, TaskResult(sub.BusinessTaskID, wantData, 0))
	for _, id := range ids {
		st := waitStatus(t, api, id, "SUCCESS")
		if diff := cmp.Diff(wantResult, meaning(t, st.Result)); diff != "" {
			t.Errorf("result by %s (-want +got):\n%s", id, diff)
		}
		if st.Error != nil || st.BusinessTaskID != sub.BusinessTaskID || st.CeleryTaskID != sub.CeleryTaskID {
			t.Errorf("finished status by %s: %+v", id, st)
		}
	}
	fst := waitStatus(t, api, fail.BusinessTaskID, "FAILURE")
	if fst.Error == nil || *fst.Error != "simulated failure: data.fail is true" || fst.Result != nil {
		t.Errorf("failed status: %+v", fst)
	}
	t.Run("result_extended", func(t *testing.T) {
		_, st := status(t, api, sub.BusinessTaskID)
		if st.Worker == nil || st.Retries == nil {
			t.Fatalf("worker/retries not stored by the Go worker (result_extended): %+v", st)
		}
		if *st.Retries != 0 || !strings.HasPrefix(*st.Worker, "celerybridge.") {
			t.Errorf("extended fields: retries %d, worker %q", *st.Retries, *st.Worker)
		}
	})

	// Callbacks, by either id.
	eventually(t, 20*time.Second, func() (bool, string) {
		n := len(store.All())
		return n == 2, fmt.Sprintf("%d callbacks stored, want 2", n)
	})
	for _, id := range ids {
		code, out := call(t, recv, http.MethodGet, "/callbacks/"+id, "")
		if code != http.StatusOK {
			t.Fatalf("/callbacks/%s: %d %s", id, code, out)
		}
		got := decode[TaskCallbacks](t, out)
		if len(got.Callbacks) != 1 || got.Callbacks[0].Status != "success" || got.Callbacks[0].TaskID != sub.BusinessTaskID {
			t.Fatalf("/callbacks/%s: %s", id, out)
		}
		if diff := cmp.Diff(wantResult, meaning(t, []byte(got.Callbacks[0].Result))); diff != "" {
			t.Errorf("callback result (-want +got):\n%s", diff)
		}
	}
	_, out := call(t, recv, http.MethodGet, "/callbacks/"+fail.CeleryTaskID, "")
	if cb := decode[TaskCallbacks](t, out).Callbacks; len(cb) != 1 || cb[0].Status != "failed" ||
		cb[0].Error == nil || *cb[0].Error != "simulated failure: data.fail is true" {
		t.Errorf("failure callback: %s", out)
	}
	_, out = call(t, recv, http.MethodGet, "/callbacks/stats", "")
	want := CallbackStats{Received: 2, Unique: 2, ByStatus: map[string]int64{"success": 1, "failed": 1}}
	if diff := cmp.Diff(want, decode[CallbackStats](t, out)); diff != "" {
		t.Errorf("callback stats (-want +got):\n%s", diff)
	}
	metricsHave(t, api, `celerybridge_queue_length{queue="celery",priority="0"} 0`,
		`celerybridge_submissions_total{outcome="ok"} 2`)
}

// TestStatusByCeleryIDWithoutMapping: a task sent by someone else (the Python main_api, here a
// producer) is unknown by id until a worker stores its state; then its Celery id answers.
func TestStatusByCeleryIDWithoutMapping(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)
	broker, err := celerycompat.NewBroker(deps.Broker, celerycompat.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := celerycompat.NewProducer(broker, celerycompat.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Send(context.Background(), TaskName, nil, map[string]any{"task_id": "biz-1", "data": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := status(t, api, res.ID); code != http.StatusNotFound {
		t.Fatalf("unmapped queued task: %d, want 404", code)
	}
	startWorker(t, cfg, deps)
	st := waitStatus(t, api, res.ID, "SUCCESS")
	if st.CeleryTaskID != res.ID || (st.BusinessTaskID != "biz-1" && st.BusinessTaskID != res.ID) {
		t.Errorf("status: %+v", st)
	}
}

func TestStatusUnknown(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	for _, id := range []string{uuid.NewString(), "x", strings.Repeat("a", maxIDLen+1)} {
		code, out := call(t, api, http.MethodGet, "/task-status/"+id, "")
		want := ErrorResponse{Code: 404, Message: MsgNotFound}
		if code != http.StatusNotFound {
			t.Errorf("%.20s: %d %s, want 404", id, code, out)
		} else if diff := cmp.Diff(want, decode[ErrorResponse](t, out)); diff != "" {
			t.Errorf("%.20s (-want +got):\n%s", id, diff)
		}
	}
}

// TestSubmitRejects: bodies that are not one JSON object are refused before anything is written.
func TestSubmitRejects(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	big := `{"pad": "` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`
	tests := []struct {
		name, body string
		code       int
		msg        string
	}{
		{"invalid JSON", `{"a":`, 400, "body is not valid JSON"},
		{"not JSON", `task`, 400, "body is not valid JSON"},
		{"array", `[1, 2]`, 400, "got an array"},
		{"string", `"x"`, 400, "got a string"},
		{"number", `1`, 400, "got a number"},
		{"null", `null`, 400, "got null"},
		{"empty", ``, 400, "got an empty body"},
		{"two objects", `{} {}`, 400, "data after it"},
		{"oversized", big, 413, "body exceeds 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := call(t, api, http.MethodPost, "/submit-task", tt.body)
			got := decode[ErrorResponse](t, out)
			if code != tt.code || got.Code != tt.code || !strings.Contains(got.Message, tt.msg) {
				t.Errorf("%d %+v, want %d with %q", code, got, tt.code, tt.msg)
			}
		})
	}
	if keys := r.keys(0); len(keys) != 0 {
		t.Errorf("rejected submissions left keys: %q", keys)
	}
	metricsHave(t, api, `celerybridge_submissions_total{outcome="rejected"} 9`,
		`celerybridge_submissions_total{outcome="ok"} 0`)
}

// TestRedisDown: with Redis unreachable a submission answers 503 and leaves nothing behind, in
// whichever order the two Redis roles fail.
func TestRedisDown(t *testing.T) {
	t.Run("all down", func(t *testing.T) {
		r := startRedis(t)
		cfg := testConfig(t, r, nil)
		api := newTestAPI(t, cfg, testDeps(t, cfg))
		r.stop()
		code, out := call(t, api, http.MethodPost, "/submit-task", `{"a": 1}`)
		if got := decode[ErrorResponse](t, out); code != 503 || got.Code != 503 || !strings.HasPrefix(got.Message, MsgSubmitFailed) {
			t.Errorf("submit: %d %s", code, out)
		}
		if code, out := call(t, api, http.MethodGet, "/task-status/"+uuid.NewString(), ""); code != 503 {
			t.Errorf("status: %d %s", code, out)
		}
		if code, out := call(t, api, http.MethodGet, "/healthz", ""); code != 503 {
			t.Errorf("healthz: %d %s", code, out)
		}
		metricsHave(t, api, `celerybridge_redis_up 0`, `celerybridge_submissions_total{outcome="failed"} 1`)
	})
	// Mapping written, publish fails: the mapping is taken back.
	t.Run("broker down", func(t *testing.T) {
		broker, results := startRedis(t), startRedis(t)
		cfg := testConfig(t, broker, env{"CELERY_RESULT_BACKEND": results.url(0)})
		api := newTestAPI(t, cfg, testDeps(t, cfg))
		broker.stop()
		if code, out := call(t, api, http.MethodPost, "/submit-task", `{"a": 1}`); code != 503 {
			t.Errorf("submit: %d %s", code, out)
		}
		if keys := results.keys(0); len(keys) != 0 {
			t.Errorf("result db keeps %q after a failed submission", keys)
		}
	})
	// Mapping fails: nothing is published.
	t.Run("results down", func(t *testing.T) {
		broker, results := startRedis(t), startRedis(t)
		cfg := testConfig(t, broker, env{"RESULT_URL": results.url(0)})
		api := newTestAPI(t, cfg, testDeps(t, cfg))
		results.stop()
		if code, out := call(t, api, http.MethodPost, "/submit-task", `{"a": 1}`); code != 503 {
			t.Errorf("submit: %d %s", code, out)
		}
		if keys := broker.keys(0); len(keys) != 0 {
			t.Errorf("broker db keeps %q after a failed submission", keys)
		}
		if code, _ := call(t, api, http.MethodGet, "/healthz", ""); code != 503 {
			t.Errorf("healthz with the result backend down: %d", code)
		}
	})
}

// metricsHave checks that /metrics answers in the text format and has every line.
func metricsHave(t testing.TB, api http.Handler, lines ...string) {
	t.Helper()
	req, rec := httpGet("/metrics")
	api.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	have := map[string]bool{}
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		have[l] = true
	}
	for _, l := range lines {
		if !have[l] {
			t.Errorf("/metrics lacks %q:\n%s", l, rec.Body.String())
		}
	}
}
