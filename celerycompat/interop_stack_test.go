package celerycompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// pyEnv is the environment that points capapp.py at the stack's Redis (broker DB 0, results DB 1).
func (s *wstack) pyEnv(extra ...string) []string {
	return append([]string{"BROKER_URL=" + s.r.URL(0), "BACKEND_URL=" + s.r.URL(1)}, extra...)
}

type pySent struct {
	Sent []struct {
		ID      string   `json:"id"`
		IDs     []string `json:"ids"`
		GroupID string   `json:"group_id"`
	} `json:"sent"`
	IDs     []string `json:"ids"`
	Seconds float64  `json:"seconds"`
}

// pySend sends tasks with the real Celery producer of peer (testdata/python/send.py).
func (s *wstack) pySend(peer celerytest.Peer, specs any, env ...string) pySent {
	s.t.Helper()
	raw, err := json.Marshal(specs)
	if err != nil {
		s.t.Fatal(err)
	}
	out := celerytest.RunPython(s.t, peer, s.pyEnv(env...), 60*time.Second, "send.py", "--spec", string(raw))
	var sent pySent
	if err := json.Unmarshal(out, &sent); err != nil {
		s.t.Fatalf("send.py output %q: %v", out, err)
	}
	return sent
}

type pyResult struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Ready    bool   `json:"ready"`
	Result   any    `json:"result"`
	Seconds  float64
	TimedOut bool `json:"timed_out"`
	Exc      *struct {
		Type   string `json:"type"`
		Module string `json:"module"`
		Args   []any  `json:"args"`
	} `json:"exc"`
	DecodeError any `json:"decode_error"`
}

// pyGet reads results with Python's AsyncResult(id).get() (testdata/python/get_result.py).
func (s *wstack) pyGet(peer celerytest.Peer, timeout time.Duration, ids ...string) map[string]pyResult {
	s.t.Helper()
	args := append([]string{"--timeout", fmt.Sprint(timeout.Seconds())}, ids...)
	out := celerytest.RunPython(s.t, peer, s.pyEnv(), timeout*time.Duration(len(ids))+60*time.Second, "get_result.py", args...)
	var got struct {
		Results []pyResult `json:"results"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		s.t.Fatalf("get_result.py output %q: %v", out, err)
	}
	m := make(map[string]pyResult, len(got.Results))
	for _, r := range got.Results {
		m[r.ID] = r
	}
	return m
}

// startPyWorker starts a real Python worker of peer on the stack's Redis.
func (s *wstack) startPyWorker(peer celerytest.Peer, env []string, args ...string) *celerytest.PyWorker {
	s.t.Helper()
	return celerytest.StartPyWorker(s.t, peer, s.r.URL(0), s.r.URL(1), env, args...)
}

// goCapWorker registers Go implementations of capapp.py's tasks, so a Go worker can serve the
// queue a Python producer fills.
func (s *wstack) goCapWorker(cfg cc.WorkerConfig) *cc.Worker {
	s.t.Helper()
	w := s.newWorker(cfg)
	host := w.Hostname()
	reg := func(name string, h cc.Handler, opts ...cc.TaskOption) {
		if err := w.Register(name, h, opts...); err != nil {
			s.t.Fatal(err)
		}
	}
	reg("cap.add", addHandler)
	reg("cap.echo", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return map[string]any{"args": req.Args, "kwargs": req.Kwargs}, nil
	}))
	reg("cap.tsum", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		var sum float64
		vals, _ := req.Args[0].([]any)
		for _, v := range vals {
			sum += num(v)
		}
		if len(req.Args) > 1 {
			sum += num(req.Args[1])
		}
		return sum, nil
	}))
	reg("cap.fail", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, &cc.TaskError{ExcType: "MyError", ExcModule: "capapp", ExcMessage: []any{"boom"}}
	}))
	reg("cap.retry_me", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if req.Retries < 2 {
			return nil, cc.Retry(&cc.TaskError{ExcType: "MyError", ExcModule: "capapp",
				ExcMessage: []any{fmt.Sprintf("try again %d", req.Retries)}}, cc.RetryIn(200*time.Millisecond))
		}
		x := 7.0
		if v, ok := req.Kwargs["x"]; ok {
			x = num(v)
		}
		return x * 10, nil
	}), cc.TaskMaxRetries(5))
	reg("cap.record", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return s.recordRun(ctx, host, req)
	}))
	return w
}

// ranRecords reads every cap:ran record (Go's and Python's cap.record write the same shape).
func (s *wstack) ranRecords() []map[string]any {
	s.t.Helper()
	raws, err := redis.ByteSlices(s.r.Do(1, "LRANGE", "cap:ran", 0, -1), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]map[string]any, 0, len(raws))
	for _, r := range raws {
		var m map[string]any
		if err := json.Unmarshal(r, &m); err != nil {
			s.t.Fatalf("record %q: %v", r, err)
		}
		out = append(out, m)
	}
	return out
}

// recordRun appends the record Python's cap.record writes to cap:ran.
func (s *wstack) recordRun(ctx context.Context, host string, req *cc.Request) (any, error) {
	rec := map[string]any{"id": req.ID, "task": req.Task, "args": req.Args, "kwargs": req.Kwargs,
		"worker": host, "retries": req.Retries, "root_id": req.RootID, "parent_id": req.ParentID,
		"priority": req.Priority, "routing_key": req.DeliveryInfo.RoutingKey, "time": float64(time.Now().UnixNano()) / 1e9}
	if req.ETA != nil {
		rec["eta"] = req.ETA.Format(time.RFC3339Nano)
	}
	hdrs := map[string]any{}
	for k, v := range req.Headers {
		var x any
		_ = json.Unmarshal(v, &x)
		hdrs[k] = x
	}
	rec["headers"] = hdrs
	raw, _ := json.Marshal(rec)
	c, err := s.rpool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Do("RPUSH", "cap:ran", raw); err != nil {
		return nil, fmt.Errorf("%w: %w", cc.ErrBroker, err)
	}
	return rec, nil
}
