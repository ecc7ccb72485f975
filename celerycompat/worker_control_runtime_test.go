package celerycompat_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

func TestControlRateLimit(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const node = "rate@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node, Concurrency: 4, PrefetchMultiplier: 4})
	var mu sync.Mutex
	var starts []time.Time
	_ = w.Register("ctl.tick", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil, nil
	}))
	_ = w.Register("ctl.free", addHandler)
	runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)

	for _, tt := range []struct {
		rate string
		want string
	}{
		{"abc", "error"}, {"5/s", "new rate limit set successfully"},
	} {
		reply := obj(call(t, ctl, node, "rate_limit", map[string]any{"task_name": "ctl.tick", "rate_limit": tt.rate}))
		if tt.want == "error" {
			if reply["error"] == nil {
				t.Errorf("rate %q: %v, want an error", tt.rate, reply)
			}
		} else if reply["ok"] != tt.want {
			t.Errorf("rate %q: %v", tt.rate, reply)
		}
	}
	if r := obj(call(t, ctl, node, "rate_limit", map[string]any{"task_name": "nope", "rate_limit": "1/s"})); r["error"] != "unknown task" {
		t.Errorf("unknown task: %v", r)
	}
	if got := list(call(t, ctl, node, "registered", nil)); !slices.Contains(got, any("ctl.tick [rate_limit=5/s]")) {
		t.Errorf("registered = %v", got)
	}
	var results []*cc.AsyncResult
	for range 5 {
		results = append(results, s.send("ctl.tick", nil, nil))
	}
	free := s.send("ctl.free", []any{1, 1}, nil) // not limited, not held up by the others
	if _, err := wait(t, free, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if _, err := wait(t, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	span := starts[len(starts)-1].Sub(starts[0])
	mu.Unlock()
	// 5 runs at 5/s with a one-token bucket: 4 waits of 200 ms at least.
	if span < 750*time.Millisecond {
		t.Fatalf("5 tasks at 5/s started within %v", span)
	}
	if err := w.SetRateLimit("ctl.tick", ""); err != nil {
		t.Fatal(err)
	}
	if err := w.SetRateLimit("ctl.tick", "x/y"); !errors.Is(err, cc.ErrInvalidConfig) {
		t.Fatalf("SetRateLimit(x/y) = %v", err)
	}
}

func TestControlTimeLimitQueuesPoolAndShutdown(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const node = "knobs@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node, MaxConcurrency: 4})
	b := newBlocker(t)
	_ = w.Register("ctl.block", b.handler(true))
	_ = w.Register("ctl.add", addHandler)
	stop := runWorker(t, w)
	t.Cleanup(b.unblock) // before the worker's drain (cleanups run last-in first-out)
	ctl := s.control()
	listening(t, ctl, node)

	t.Run("time_limit", func(t *testing.T) {
		r := obj(call(t, ctl, node, "time_limit", map[string]any{"task_name": "ctl.block", "soft": 0.2, "hard": 5}))
		if r["ok"] != "time limits set successfully" {
			t.Fatalf("time_limit: %v", r)
		}
		res := s.send("ctl.block", []any{"slow"}, nil)
		_, err := wait(t, res, 10*time.Second)
		var te *cc.TaskError
		if !errors.As(err, &te) || te.ExcType != "SoftTimeLimitExceeded" {
			t.Fatalf("soft limit set by time_limit: %v", err)
		}
		call(t, ctl, node, "time_limit", map[string]any{"task_name": "ctl.block"}) // clear
		if r := obj(call(t, ctl, node, "time_limit", map[string]any{"task_name": "nope"})); r["error"] != "unknown task" {
			t.Errorf("unknown task: %v", r)
		}
	})

	t.Run("add and cancel consumer", func(t *testing.T) {
		r := obj(call(t, ctl, node, "add_consumer", map[string]any{"queue": "extra", "exchange": nil, "exchange_type": nil, "routing_key": nil}))
		if r["ok"] != "add consumer extra" {
			t.Fatalf("add_consumer: %v", r)
		}
		var names []any
		for _, q := range list(call(t, ctl, node, "active_queues", nil)) {
			names = append(names, obj(q)["name"])
		}
		if !slices.Equal(names, []any{"celery", "extra"}) {
			t.Errorf("active_queues = %v", names)
		}
		if _, err := wait(t, s.send("ctl.add", []any{1, 2}, nil, cc.WithQueue("extra")), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		r = obj(call(t, ctl, node, "cancel_consumer", map[string]any{"queue": "extra"}))
		if r["ok"] != "no longer consuming from extra" {
			t.Fatalf("cancel_consumer: %v", r)
		}
		s.send("ctl.add", []any{1, 2}, nil, cc.WithQueue("extra"))
		done := s.send("ctl.add", []any{3, 4}, nil)
		if _, err := wait(t, done, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if n := s.llen("extra"); n != 1 {
			t.Errorf("extra holds %d messages after cancel_consumer, want 1 (not consumed)", n)
		}
	})

	t.Run("pool grow and shrink", func(t *testing.T) {
		if r := obj(call(t, ctl, node, "pool_grow", map[string]any{"n": 2})); r["ok"] != "pool will grow" {
			t.Fatalf("pool_grow: %v", r)
		}
		if r := obj(call(t, ctl, node, "pool_grow", map[string]any{"n": 5})); r["error"] == nil {
			t.Errorf("growing past MaxConcurrency: %v", r)
		}
		var res []*cc.AsyncResult
		for i := range 3 {
			res = append(res, s.send("ctl.block", []any{i}, nil))
		}
		for _, r := range res {
			b.waitStart(t, r.ID) // three run at once
		}
		st := obj(call(t, ctl, node, "stats", nil))
		if obj(st["pool"])["max-concurrency"] != 3.0 || st["prefetch_count"] != 3.0 {
			t.Errorf("stats after grow: pool %v prefetch %v", st["pool"], st["prefetch_count"])
		}
		if got := len(list(call(t, ctl, node, "active", nil))); got != 3 {
			t.Errorf("%d active, want 3", got)
		}
		if r := obj(call(t, ctl, node, "pool_shrink", map[string]any{"n": 3})); r["error"] == nil {
			t.Errorf("shrinking to zero: %v", r)
		}
		if r := obj(call(t, ctl, node, "pool_shrink", map[string]any{"n": 2})); r["ok"] != "pool will shrink" {
			t.Fatalf("pool_shrink: %v", r)
		}
		b.unblock()
		for _, r := range res {
			if _, err := wait(t, r, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if st := obj(call(t, ctl, node, "stats", nil)); obj(st["pool"])["max-concurrency"] != 1.0 {
			t.Errorf("stats after shrink: %v", st["pool"])
		}
		for i := range 5 { // still serves, one at a time
			if _, err := wait(t, s.send("ctl.add", []any{i, 1}, nil), 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		if _, err := ctl.Broadcast(context.Background(), "shutdown", nil, cc.BroadcastNoReply(), cc.BroadcastTo(node)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- stop() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("worker still running after the shutdown command")
		}
		members, _ := redis.Strings(s.r.Do(0, "SMEMBERS", "_kombu.binding.celery.pidbox"), nil)
		if len(members) != 0 {
			t.Errorf("mailbox bindings after shutdown: %q", members)
		}
	})
}

func TestControlSurvivesRedisRestart(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const node = "restart@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node})
	_ = w.Register("ctl.add", addHandler)
	runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)
	s.r.Stop()
	s.r.Start() // empty: the binding is gone and the subscription broken
	listening(t, ctl, node)
	eventually(t, 10*time.Second, "mailbox binding restored", func() bool {
		got, _ := redis.Strings(s.r.Do(0, "SMEMBERS", "_kombu.binding.celery.pidbox"), nil)
		return slices.Contains(got, "\x06\x16\x06\x16"+node+".celery.pidbox")
	})
}
