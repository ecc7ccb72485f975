package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
	"github.com/google/uuid"
)

// fakeRig is an API and a receiver in one test server: each submission is "processed" at once
// (SUCCESS stored in miniredis) and its callback stored, unless the knobs say otherwise.
type fakeRig struct {
	t       *testing.T
	pool    *redis.Pool
	backend *celerycompat.Backend
	store   *callback.MemoryStore
	srv     *httptest.Server

	mu        sync.Mutex
	n         int
	failEvery int  // answer 500 to every n-th submission
	dropAfter int  // store no callback after this many (0: never drop)
	duplicate bool // store the first task's callback twice, under another event id
	delay     time.Duration
	// outbox, when set, gets the callbacks of the tasks dropAfter drops, for a dispatcher
	// that dead-letters them.
	outbox *callback.Outbox
}

func newFakeRig(t *testing.T) (*fakeRig, *miniredis.Miniredis) {
	t.Helper()
	m := miniredis.RunT(t)
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.Dial("tcp", m.Addr()) }}
	t.Cleanup(func() { pool.Close() })
	backend, err := celerycompat.NewBackend(pool, celerycompat.BackendConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRig{t: t, backend: backend, store: callback.NewMemoryStore(), pool: pool}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /submit-task", f.submit)
	mux.HandleFunc("GET /callbacks/stats", f.stats)
	mux.HandleFunc("GET /callbacks/{id}", f.callbacks)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f, m
}

func (f *fakeRig) submit(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	if f.failEvery > 0 && n%f.failEvery == 0 {
		http.Error(w, `{"detail":{"code":500,"message":"boom"}}`, http.StatusInternalServerError)
		return
	}
	bid, cid := uuid.NewString(), uuid.NewString()
	go func() {
		time.Sleep(f.delay)
		ctx := context.Background()
		if _, err := f.backend.MarkSuccess(ctx, cid, body); err != nil {
			f.t.Error(err)
		}
		if f.dropAfter > 0 && n > f.dropAfter {
			if f.outbox != nil {
				if err := f.outbox.Enqueue(ctx, callback.Event{CeleryTaskID: cid, TaskID: bid, Status: callback.StatusSuccess}); err != nil {
					f.t.Error(err)
				}
			}
			return
		}
		cb := callback.Callback{EventID: callback.EventID(cid, "success"), TaskID: bid, CeleryTaskID: cid,
			Status: callback.StatusSuccess, ReceivedAt: time.Now()}
		f.store.Save(ctx, cb)
		f.store.Save(ctx, cb) // a redelivery: suppressed, counted
		if f.duplicate && n == 1 {
			cb.EventID = "another"
			f.store.Save(ctx, cb)
		}
	}()
	json.NewEncoder(w).Encode(map[string]any{"code": 200, "message": "ok", "business_task_id": bid, "celery_task_id": cid})
}

func (f *fakeRig) stats(w http.ResponseWriter, r *http.Request) {
	st, _ := f.store.Stats(r.Context())
	json.NewEncoder(w).Encode(map[string]any{"received": st.Received, "unique": st.Unique,
		"duplicates": st.Duplicates, "by_status": st.ByStatus})
}

func (f *fakeRig) callbacks(w http.ResponseWriter, r *http.Request) {
	cbs, _ := f.store.ByTaskID(r.Context(), r.PathValue("id"))
	if len(cbs) == 0 {
		http.Error(w, `{"code":404}`, http.StatusNotFound)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"task_id": r.PathValue("id"), "callbacks": cbs})
}

func (f *fakeRig) config(t *testing.T, m *miniredis.Miniredis, n int) Config {
	return Config{
		APIURL:        f.srv.URL,
		N:             n,
		Source:        &ReceiverSource{URL: f.srv.URL},
		RedisURL:      "redis://" + m.Addr() + "/0",
		SubmittedFile: filepath.Join(t.TempDir(), "submitted_tasks.txt"),
		Timeout:       10 * time.Second,
		PollInterval:  5 * time.Millisecond,
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(*fakeRig)
		n          int
		timeout    time.Duration
		consistent bool
		check      func(t *testing.T, r *Report)
	}{
		{name: "consistent", n: 200, consistent: true, check: func(t *testing.T, r *Report) {
			if r.Submitted != 200 || r.Processed != 200 || r.Callbacks != 200 || r.Duplicates != 0 {
				t.Errorf("counts %d/%d/%d dup %d", r.Submitted, r.Processed, r.Callbacks, r.Duplicates)
			}
			if r.Suppressed != 200 {
				t.Errorf("suppressed = %d, want 200 (one redelivery per task)", r.Suppressed)
			}
			if r.ByStatus["success"] != 200 || r.States["SUCCESS"] != 200 {
				t.Errorf("by status %v, states %v", r.ByStatus, r.States)
			}
			if r.LatencyP50 <= 0 || r.LatencyP99 < r.LatencyP50 || r.TasksPerSecond <= 0 {
				t.Errorf("latency p50 %v p99 %v, %v tasks/s", r.LatencyP50, r.LatencyP99, r.TasksPerSecond)
			}
		}},
		{name: "slow callbacks", n: 50, consistent: true, setup: func(f *fakeRig) { f.delay = 300 * time.Millisecond },
			check: func(t *testing.T, r *Report) {
				if r.LatencyP50 < 300*time.Millisecond {
					t.Errorf("p50 %v, want >= 300ms", r.LatencyP50)
				}
			}},
		{name: "failed submissions", n: 100, consistent: true, setup: func(f *fakeRig) { f.failEvery = 10 },
			check: func(t *testing.T, r *Report) {
				if r.Submission.Failed != 10 || r.Submission.Succeeded != 90 || r.Submitted != 90 || len(r.Submission.Errors) != 10 {
					t.Errorf("submission %+v, submitted %d", r.Submission, r.Submitted)
				}
			}},
		{name: "missing callbacks", n: 40, timeout: 500 * time.Millisecond, setup: func(f *fakeRig) { f.dropAfter = 35 },
			check: func(t *testing.T, r *Report) {
				if !r.TimedOut || len(r.MissingCallbacks) != 5 || r.Callbacks != 35 || r.Processed != 40 {
					t.Errorf("timed out %v, missing %d, callbacks %d, processed %d", r.TimedOut, len(r.MissingCallbacks), r.Callbacks, r.Processed)
				}
			}},
		{name: "duplicate in store", n: 20, setup: func(f *fakeRig) { f.duplicate = true },
			check: func(t *testing.T, r *Report) {
				if r.Duplicates != 1 || len(r.DuplicateIDs) != 1 || r.Callbacks != 20 {
					t.Errorf("duplicates %d %v, callbacks %d", r.Duplicates, r.DuplicateIDs, r.Callbacks)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, m := newFakeRig(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			cfg := f.config(t, m, tt.n)
			if tt.timeout > 0 {
				cfg.Timeout = tt.timeout
			}
			progress := &lockedWriter{w: &strings.Builder{}}
			cfg.Progress = progress
			rep, err := Run(context.Background(), cfg)
			if rep == nil {
				t.Fatalf("no report: %v", err)
			}
			if got := rep.Consistent(); got != tt.consistent || (err == nil) != tt.consistent {
				t.Errorf("consistent = %v, err = %v; want %v", got, err, tt.consistent)
			}
			if err != nil && !errors.Is(err, ErrInconsistent) {
				t.Errorf("err = %v, want ErrInconsistent", err)
			}
			if tt.check != nil {
				tt.check(t, rep)
			}
			var out strings.Builder
			rep.Print(&out)
			t.Log(out.String())
			for _, want := range []string{"submitted:", "processed:", "callbacks received:", "duplicates:", "missing callbacks:", "p95", "result:"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, out.String())
				}
			}
			if !strings.Contains(progress.String(), "submitting") {
				t.Errorf("no progress bar: %q", progress.String())
			}
			lines, err := os.ReadFile(cfg.SubmittedFile)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(string(lines), "\n"); got != rep.Submitted {
				t.Errorf("%d lines in submitted_tasks.txt, want %d", got, rep.Submitted)
			}
			first := strings.SplitN(string(lines), "\n", 2)[0]
			if parts := strings.Split(first, ","); len(parts) != 3 || uuid.Validate(parts[1]) != nil || uuid.Validate(parts[2]) != nil {
				t.Errorf("line %q is not task_index,business_task_id,celery_task_id", first)
			}
		})
	}
}

func TestSubmitConcurrency(t *testing.T) {
	var inFlight, peak int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		fmt.Fprintf(w, `{"code":200,"business_task_id":"b","celery_task_id":"c"}`)
	}))
	defer srv.Close()
	sub, err := Submit(context.Background(), Config{APIURL: srv.URL, N: 100, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if s := sub.Summary(); s.Succeeded != 100 || s.Concurrency != 4 || peak > 4 {
		t.Errorf("summary %+v, peak %d", s, peak)
	}
}

// TestSubmitErrors: bad answers are recorded per task, through the default client and through a
// net/http one (Config.Client).
func TestSubmitErrors(t *testing.T) {
	for _, name := range []string{"default", "net/http"} {
		t.Run(name, func(t *testing.T) {
			var client *http.Client
			if name == "net/http" {
				client = NewClient(4)
			}
			testSubmitErrors(t, client)
		})
	}
}

func testSubmitErrors(t *testing.T, client *http.Client) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			TaskIndex int    `json:"task_index"`
			Content   string `json:"content"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		if body.Content != fmt.Sprintf("测试任务%d", body.TaskIndex) {
			t.Errorf("body %+v", body)
		}
		switch body.TaskIndex {
		case 1:
			fmt.Fprint(w, `not json`)
		case 2:
			fmt.Fprint(w, `{"code":200}`)
		case 3:
			http.Error(w, `{"detail":"boom"}`, http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, `{"code":200,"business_task_id":"b","celery_task_id":"c"}`)
		}
	}))
	defer srv.Close()
	var log strings.Builder
	sub, err := Submit(context.Background(), Config{APIURL: srv.URL + "/", N: 4, Log: &log, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Tasks[0].OK() || sub.Tasks[1].OK() || sub.Tasks[2].OK() || !sub.Tasks[3].OK() ||
		!strings.HasPrefix(sub.Tasks[2].Err, "status 503: ") {
		t.Errorf("tasks %+v", sub.Tasks)
	}
	if got := string(sub.SubmittedLines()); got != "4,b,c\n" {
		t.Errorf("lines %q", got)
	}
	if !strings.Contains(log.String(), "submitted task 4: b") || !strings.Contains(log.String(), "task 1 failed") {
		t.Errorf("log %q", log.String())
	}
}

func TestLogSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "receiver.log")
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	line := func(id, status string) string {
		return fmt.Sprintf("【回调接收】任务 %s，状态：%s，数据：{'task_id': '%s', 'status': '%s', 'result': {'status': 'success', 'business_task_id': '%s'}}\n", id, status, id, status, id)
	}
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	src := &LogSource{Path: path}
	ctx := context.Background()
	if got, err := src.Lookup(ctx, []string{a}); err != nil || len(got) != 0 {
		t.Fatalf("before the file exists: %v %v", got, err)
	}
	write("INFO:     Uvicorn running on http://0.0.0.0:8001\n" + line(a, "success"))
	partial := line(b, "failed")
	write(partial[:20])
	got, err := src.Lookup(ctx, []string{a, b, c})
	if err != nil || len(got) != 1 || got[a].Callbacks != 1 || got[a].Statuses[0] != "success" {
		t.Fatalf("got %+v, %v", got, err)
	}
	write(partial[20:] + line(a, "success") + "INFO:     127.0.0.1:1 - \"POST /receive-task-result HTTP/1.1\" 200 OK\n")
	got, _ = src.Lookup(ctx, []string{a, b, c})
	if len(got) != 2 || got[a].Callbacks != 2 || got[b].Callbacks != 1 || got[b].Statuses[0] != "failed" {
		t.Fatalf("got %+v", got)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

// lockedWriter serialises writes from the progress bars and the test.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// TestRunReportsDeadLetters: callbacks the dispatcher gave up on show in the consistency report
// as dead-lettered, with the way to replay them.
func TestRunReportsDeadLetters(t *testing.T) {
	f, m := newFakeRig(t)
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	t.Cleanup(refuse.Close)
	ob, err := callback.NewOutbox(f.pool, callback.OutboxConfig{URL: refuse.URL})
	if err != nil {
		t.Fatal(err)
	}
	d, err := callback.NewDispatcher(ob, callback.DispatcherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	f.dropAfter, f.outbox = 8, ob

	cfg := f.config(t, m, 10)
	cfg.Timeout = time.Second
	rep, err := Run(context.Background(), cfg)
	if rep == nil || !errors.Is(err, ErrInconsistent) {
		t.Fatalf("report %v, err %v; want an inconsistent report", rep, err)
	}
	if len(rep.DeadLettered) != 2 || rep.DeadLetterError != "" {
		t.Fatalf("dead-lettered %v (%s), want the 2 dropped tasks", rep.DeadLettered, rep.DeadLetterError)
	}
	var out strings.Builder
	rep.Print(&out)
	if !strings.Contains(out.String(), "dead-lettered:        2") || !strings.Contains(rep.Verdict(), "2 callbacks dead-lettered") ||
		!strings.Contains(out.String(), "/callbacks/dead/replay") {
		t.Errorf("report does not show the dead letters:\n%s", out.String())
	}
}
