package celerycompat_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// lockedBuffer is a bytes.Buffer safe for the worker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A plain hook behaves like a Celery signal receiver: its error is logged at ERROR with the task
// id, the task is acknowledged and does not run again (before, it re-ran after 30 s).
func TestWorkerPlainHookErrorIsLoggedNotRetried(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var logs lockedBuffer
	hooks := &cc.Hooks{}
	var calls atomic.Int32
	hooks.OnTaskSuccess(func(ctx context.Context, e *cc.TaskSuccess) error {
		calls.Add(1)
		return errors.New("metrics endpoint down")
	})
	var runs atomic.Int32
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks, HookRetryTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_ = w.Register("cap.one", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		runs.Add(1)
		return 1, nil
	}))
	runWorker(t, w)
	r := s.send("cap.one", nil, nil)
	if _, err := wait(t, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the ack", func() bool { return s.hlen("unacked") == 0 })
	time.Sleep(300 * time.Millisecond) // past HookRetryTimeout: a re-run would have happened
	if n, c := runs.Load(), calls.Load(); n != 1 || c != 1 {
		t.Fatalf("task ran %d times, hook called %d times; want 1 and 1", n, c)
	}
	if n := s.llen("celery"); n != 0 {
		t.Fatalf("%d messages back in the queue", n)
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "metrics endpoint down") || !strings.Contains(out, "task_id="+r.ID) {
		t.Fatalf("hook error not logged at ERROR with the task id:\n%s", out)
	}
}

// Only the failing BeforeAck hook is called again; a plain hook beside it runs once.
func TestWorkerBeforeAckRetriesOnlyItself(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	var plain, must atomic.Int32
	hooks.OnTaskFailure(func(ctx context.Context, e *cc.TaskFailure) error { plain.Add(1); return nil })
	hooks.OnTaskFailure(cc.BeforeAck(func(ctx context.Context, e *cc.TaskFailure) error {
		if must.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}))
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.fail", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, errors.New("boom")
	}))
	runWorker(t, w)
	s.send("cap.fail", nil, nil)
	eventually(t, 10*time.Second, "the ack", func() bool { return must.Load() == 3 && s.hlen("unacked") == 0 })
	if n := plain.Load(); n != 1 {
		t.Fatalf("plain hook called %d times, want 1", n)
	}
}

// Every task event reaches the task id the same way.
func TestHookEventsShareTaskInfo(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	ids := make(chan string, 16)
	hooks.OnTaskReceived(func(ctx context.Context, e *cc.TaskReceived) error { ids <- "received " + e.TaskID; return nil })
	hooks.OnTaskPrerun(func(ctx context.Context, e *cc.TaskPrerun) error { ids <- "prerun " + e.TaskID; return nil })
	hooks.OnTaskSuccess(func(ctx context.Context, e *cc.TaskSuccess) error { ids <- "success " + e.TaskID; return nil })
	hooks.OnTaskPostrun(func(ctx context.Context, e *cc.TaskPostrun) error { ids <- "postrun " + e.TaskID; return nil })
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	r := s.send("cap.add", []any{1, 2}, nil)
	got := map[string]bool{}
	for range 4 {
		select {
		case g := <-ids:
			got[g] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("events seen: %v", got)
		}
	}
	for _, ev := range []string{"received", "prerun", "success", "postrun"} {
		if !got[ev+" "+r.ID] {
			t.Errorf("%s: task id missing; got %v", ev, got)
		}
	}
}
