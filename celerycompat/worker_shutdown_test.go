package celerycompat_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestWorkerColdShutdownHandsTaskBack: a running task whose context a cold shutdown (Shutdown's
// ctx ending) cancels is stopped, not failed, as in Celery: no FAILURE stored, no task_failure
// hook, no error logged, the state stays STARTED, and its message is straight back on the queue
// (not left un-acked for the visibility timeout) to run again.
func TestWorkerColdShutdownHandsTaskBack(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	logs := &celerytest.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	started := make(chan struct{})
	var failures atomic.Int32
	hooks := &cc.Hooks{}
	hooks.OnTaskFailure(func(ctx context.Context, ev *cc.TaskFailure) error { failures.Add(1); return nil })
	w := s.newWorker(cc.WorkerConfig{TrackStarted: true, Hooks: hooks, Logger: log})
	_ = w.Register("cap.block", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	res := s.send("cap.block", nil, nil)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	<-started

	warm, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := w.Shutdown(warm); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded (the cold shutdown was asked for)", err)
	}
	<-runErr

	meta, err := s.backend.GetMeta(context.Background(), res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Status != cc.StateStarted {
		t.Errorf("state after a cold shutdown: %s, want STARTED (the task did not fail)", meta.Status)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("task_failure fired %d times for an interrupted task", n)
	}
	if n, u := s.llen("celery"), s.hlen("unacked"); n != 1 || u != 0 {
		t.Errorf("queue %d, un-acked %d after a cold shutdown; want the message back on the queue (1, 0)", n, u)
	}
	if out := logs.String(); strings.Contains(out, "level=ERROR") || !strings.Contains(out, "back on the queue") {
		t.Errorf("log: want no error and the hand-back noted:\n%s", out)
	}

	// The handed-back message runs again and succeeds on the next worker.
	w2 := s.newWorker(cc.WorkerConfig{})
	_ = w2.Register("cap.block", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) { return "again", nil }))
	runWorker(t, w2)
	if meta, err := wait(t, res, 10*time.Second); err != nil || meta.Result != "again" {
		t.Fatalf("re-run after the hand-back: %v %v", meta, err)
	}
}
