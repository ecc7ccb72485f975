package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

func TestWorkerRunsTasksAndStoresResults(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Concurrency: 4, PrefetchMultiplier: 2})
	if err := w.Register("cap.add", addHandler); err != nil {
		t.Fatal(err)
	}
	if err := w.Register("cap.add", addHandler); !errors.Is(err, cc.ErrDuplicateTask) {
		t.Fatalf("second Register: %v, want ErrDuplicateTask", err)
	}
	stop := runWorker(t, w)
	var results []*cc.AsyncResult
	for i := range 50 {
		results = append(results, s.send("cap.add", []any{i, 1000}, nil))
	}
	for i, r := range results {
		meta, err := wait(t, r, 10*time.Second)
		if err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
		if meta.Status != cc.StateSuccess || num(meta.Result) != float64(i+1000) {
			t.Fatalf("task %d: %s %v, want SUCCESS %d", i, meta.Status, meta.Result, i+1000)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := s.hlen("unacked"); n != 0 {
		t.Fatalf("%d messages left un-acked", n)
	}
	if err := w.Run(context.Background()); !errors.Is(err, cc.ErrWorkerClosed) {
		t.Fatalf("second Run: %v, want ErrWorkerClosed", err)
	}
	if err := w.Shutdown(context.Background()); !errors.Is(err, cc.ErrWorkerClosed) {
		t.Fatalf("Shutdown after stop: %v, want ErrWorkerClosed", err)
	}
	s.backend.Close()
	s.pool.Close()
	s.rpool.Close()
	checkNoLeak(t, before)
}

func TestWorkerOneAtATimeKeepsFIFOOrder(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var mu sync.Mutex
	var order []int
	var running, maxRunning atomic.Int32
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if n := running.Add(1); n > maxRunning.Load() {
			maxRunning.Store(n)
		}
		defer running.Add(-1)
		mu.Lock()
		order = append(order, int(num(req.Args[0])))
		mu.Unlock()
		return nil, nil
	}))
	var last *cc.AsyncResult
	for i := range 200 {
		last = s.send("cap.rec", []any{i}, nil)
	}
	runWorker(t, w)
	if _, err := wait(t, last, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if maxRunning.Load() != 1 {
		t.Fatalf("%d tasks ran at once with concurrency 1", maxRunning.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range order {
		if v != i {
			t.Fatalf("task %d ran at position %d: order %v", v, i, order[:min(len(order), 20)])
		}
	}
}

func TestWorkerServesPriorityZeroFirst(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var mu sync.Mutex
	var got []int
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		mu.Lock()
		got = append(got, req.Priority)
		mu.Unlock()
		return nil, nil
	}))
	prios := []int{9, 6, 3, 0, 9, 0, 5}
	var res []*cc.AsyncResult
	for _, p := range prios {
		res = append(res, s.send("cap.rec", nil, nil, cc.WithPriority(p)))
	}
	runWorker(t, w)
	for _, r := range res {
		if _, err := wait(t, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	want := []int{0, 0, 3, 5, 6, 9, 9}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ran priorities %v, want %v", got, want)
	}
}

func TestWorkerRoundRobinAcrossQueues(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var mu sync.Mutex
	var queues []string
	w := s.newWorker(cc.WorkerConfig{Queues: []string{"a", "b"}})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		mu.Lock()
		queues = append(queues, req.Queue)
		mu.Unlock()
		return nil, nil
	}))
	var res []*cc.AsyncResult
	for range 4 {
		res = append(res, s.send("cap.rec", nil, nil, cc.WithQueue("a")))
	}
	for range 4 {
		res = append(res, s.send("cap.rec", nil, nil, cc.WithQueue("b")))
	}
	runWorker(t, w)
	for _, r := range res {
		if _, err := wait(t, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(queues, ""); got != "abababab" {
		t.Fatalf("queue order %s, want abababab", got)
	}
}

func TestWorkerHoldsETATasksWithoutBlocking(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var mu sync.Mutex
	ran := map[string]time.Time{}
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		mu.Lock()
		ran[req.ID] = time.Now()
		mu.Unlock()
		return nil, nil
	}))
	sent := time.Now()
	later := s.send("cap.rec", nil, nil, cc.WithCountdown(1500*time.Millisecond))
	now := s.send("cap.rec", nil, nil)
	runWorker(t, w)
	if _, err := wait(t, now, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	_, early := ran[later.ID]
	mu.Unlock()
	if early {
		t.Fatal("countdown task ran before its ETA")
	}
	if _, err := wait(t, later, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if d := ran[later.ID].Sub(sent); d < 1500*time.Millisecond {
		t.Fatalf("countdown task ran after %v, want >= 1.5s", d)
	}
}

func TestWorkerRevokesExpiredTasks(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	var revoked atomic.Int32
	hooks.OnTaskRevoked(func(ctx context.Context, e *cc.TaskRevoked) error {
		if e.Expired {
			revoked.Add(1)
		}
		return nil
	})
	var ran atomic.Int32
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		ran.Add(1)
		return nil, nil
	}))
	res := s.send("cap.rec", nil, nil, cc.WithExpires(time.Now().Add(-time.Second)))
	runWorker(t, w)
	meta, err := wait(t, res, 10*time.Second)
	var te *cc.TaskError
	if meta.Status != cc.StateRevoked || !errors.As(err, &te) || te.ExcType != "TaskRevokedError" || te.Message() != "expired" {
		t.Fatalf("expired task: %s %v, want REVOKED TaskRevokedError('expired')", meta.Status, err)
	}
	// REVOKED is stored before task_revoked fires, as in Celery: wait for the hook.
	eventually(t, 5*time.Second, "task_revoked(expired)", func() bool { return revoked.Load() == 1 })
	if ran.Load() != 0 || revoked.Load() != 1 {
		t.Fatalf("ran %d times, task_revoked(expired) fired %d times; want 0 and 1", ran.Load(), revoked.Load())
	}
	eventually(t, 5*time.Second, "ack of the expired task", func() bool { return s.hlen("unacked") == 0 })
}

func TestWorkerRetriesAndGivesUp(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	var retries atomic.Int32
	hooks.OnTaskRetry(func(ctx context.Context, e *cc.TaskRetry) error { retries.Add(1); return nil })
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.flaky", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if req.Retries < 2 {
			return nil, cc.Retry(fmt.Errorf("try %d", req.Retries), cc.RetryIn(10*time.Millisecond))
		}
		return req.Retries, nil
	}))
	_ = w.Register("cap.never", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, cc.Retry(errors.New("still broken"), cc.RetryIn(time.Millisecond))
	}), cc.TaskMaxRetries(1))
	runWorker(t, w)
	meta, err := wait(t, s.send("cap.flaky", nil, nil), 10*time.Second)
	if err != nil || num(meta.Result) != 2 {
		t.Fatalf("flaky: %v %v, want result 2", meta.Result, err)
	}
	_, err = wait(t, s.send("cap.never", nil, nil), 10*time.Second)
	var te *cc.TaskError
	if !errors.As(err, &te) || te.ExcType != "MaxRetriesExceededError" || !strings.Contains(te.Message(), "still broken") {
		t.Fatalf("never: %v, want MaxRetriesExceededError naming the cause", err)
	}
	if retries.Load() != 3 {
		t.Fatalf("task_retry fired %d times, want 3", retries.Load())
	}
}

func TestWorkerAutoRetryWithBackoff(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	errTransient := errors.New("transient")
	var calls atomic.Int32
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.auto", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if calls.Add(1) < 3 {
			return nil, errTransient
		}
		return "ok", nil
	}), cc.TaskAutoRetry(func(err error) bool { return errors.Is(err, errTransient) }, 10*time.Millisecond, 50*time.Millisecond, false))
	runWorker(t, w)
	meta, err := wait(t, s.send("cap.auto", nil, nil), 10*time.Second)
	if err != nil || meta.Result != "ok" || calls.Load() != 3 {
		t.Fatalf("auto retry: %v %v after %d calls", meta.Result, err, calls.Load())
	}
}

func TestWorkerPanicIsAFailure(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.panic", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		panic("kaboom")
	}))
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	meta, err := wait(t, s.send("cap.panic", nil, nil), 10*time.Second)
	var te *cc.TaskError
	if meta.Status != cc.StateFailure || !errors.As(err, &te) || !strings.Contains(te.Message(), "kaboom") {
		t.Fatalf("panic: %s %v", meta.Status, err)
	}
	if !strings.Contains(meta.Traceback, "worker_exec.go") {
		t.Fatalf("traceback does not hold the Go stack:\n%s", meta.Traceback)
	}
	if meta, err := wait(t, s.send("cap.add", []any{1, 2}, nil), 10*time.Second); err != nil || num(meta.Result) != 3 {
		t.Fatalf("worker stopped serving after a panic: %v %v", meta.Result, err)
	}
}

func TestWorkerTimeLimits(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Concurrency: 2})
	_ = w.Register("cap.soft", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	_ = w.Register("cap.hard", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		<-block // ignores its context
		return nil, nil
	}))
	runWorker(t, w)
	_, err := wait(t, s.send("cap.soft", nil, nil, cc.WithSoftTimeLimit(50*time.Millisecond)), 10*time.Second)
	var te *cc.TaskError
	if !errors.As(err, &te) || te.ExcType != "SoftTimeLimitExceeded" {
		t.Fatalf("soft limit: %v", err)
	}
	_, err = wait(t, s.send("cap.hard", nil, nil, cc.WithTimeLimit(100*time.Millisecond)), 10*time.Second)
	if !errors.As(err, &te) || te.ExcType != "TimeLimitExceeded" || te.ExcModule != "billiard.exceptions" {
		t.Fatalf("hard limit: %v", err)
	}
}

func TestWorkerChainAndLink(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Concurrency: 2})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	ctx := context.Background()
	last, err := s.producer.SendChain(ctx, []cc.Signature{
		cc.NewSignature("cap.add", []any{1, 2}, nil),
		cc.NewSignature("cap.add", []any{10}, nil),
		cc.NewSignature("cap.add", []any{100}, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := wait(t, last, 10*time.Second)
	if err != nil || num(meta.Result) != 113 {
		t.Fatalf("chain: %v %v, want 113", meta.Result, err)
	}
	cb := cc.NewSignature("cap.add", []any{5}, nil)
	cbID := "cccccccc-0000-0000-0000-000000000001"
	cb.Options["task_id"] = cbID
	parent := s.send("cap.add", []any{1, 2}, nil, cc.WithLink(cb))
	pm, err := wait(t, parent, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(pm.Children) != 1 {
		t.Fatalf("parent children %v, want the link callback", pm.Children)
	}
	meta, err = wait(t, s.backend.AsyncResult(cbID), 10*time.Second)
	if err != nil || num(meta.Result) != 8 || meta.ParentID != parent.ID {
		t.Fatalf("link callback: %v %v parent %q, want 8 with parent %s", meta.Result, err, meta.ParentID, parent.ID)
	}
}

func TestWorkerHookOrderResultStoredBeforeSuccessAckAfter(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	type seen struct {
		state   cc.State
		unacked int
	}
	got := make(chan seen, 1)
	hooks.OnTaskSuccess(func(ctx context.Context, e *cc.TaskSuccess) error {
		meta, err := s.backend.GetMeta(ctx, e.Request.ID)
		if err != nil {
			return err
		}
		c := s.pool.Get()
		defer c.Close()
		n, _ := redis.Int(c.Do("HLEN", "unacked"))
		got <- seen{meta.Status, n}
		return nil
	}, "cap.add")
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	s.send("cap.add", []any{1}, nil)
	select {
	case g := <-got:
		if g.state != cc.StateSuccess || g.unacked != 1 {
			t.Fatalf("in task_success: state %s, %d un-acked; want SUCCESS stored and the message still un-acked", g.state, g.unacked)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("task_success did not fire")
	}
	eventually(t, 5*time.Second, "ack after the hook", func() bool { return s.hlen("unacked") == 0 })
}

// TestWorkerSurvivesPanickingHook: a panicking hook is recovered and logged and counts as done;
// the worker goes on serving.
func TestWorkerSurvivesPanickingHook(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	var calls atomic.Int32
	hooks.OnTaskSuccess(func(ctx context.Context, e *cc.TaskSuccess) error {
		if calls.Add(1) == 1 {
			panic("a buggy hook")
		}
		return nil
	})
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	if _, err := wait(t, s.send("cap.add", []any{1}, nil), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, s.send("cap.add", []any{2}, nil), 10*time.Second); err != nil {
		t.Fatalf("worker stopped after a hook panic: %v", err)
	}
	eventually(t, 5*time.Second, "hook calls", func() bool { return calls.Load() == 2 })
}

// TestWorkerFailingHookMeansTheTaskRunsAgain: a BeforeAck task_success hook that keeps failing
// past HookRetryTimeout (say, a callback outbox whose Redis is down) leaves the message un-acked
// and puts it back, so the task runs again and the hook gets another chance: the effect is
// delayed, never skipped.
func TestWorkerFailingHookMeansTheTaskRunsAgain(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	var hookCalls, hookOK atomic.Int32
	hooks.OnTaskSuccess(cc.BeforeAck(func(ctx context.Context, e *cc.TaskSuccess) error {
		if hookCalls.Add(1) <= 3 {
			return errors.New("outbox unreachable")
		}
		hookOK.Add(1)
		return nil
	}))
	var runs atomic.Int32
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks, HookRetryTimeout: 100 * time.Millisecond})
	_ = w.Register("cap.add", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		runs.Add(1)
		return 1, nil
	}))
	runWorker(t, w)
	s.send("cap.add", nil, nil)
	eventually(t, 10*time.Second, "the hook to succeed", func() bool { return hookOK.Load() == 1 })
	if n := runs.Load(); n < 2 {
		t.Fatalf("the task ran %d times; a hook failing past its retry window must make it run again", n)
	}
	eventually(t, 5*time.Second, "the ack", func() bool { return s.hlen("unacked") == 0 && s.llen("celery") == 0 })
	if n := hookOK.Load(); n != 1 {
		t.Fatalf("hook succeeded %d times, want 1", n)
	}
}

func TestWorkerShutdownPutsWaitingMessagesBack(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	w := s.newWorker(cc.WorkerConfig{PrefetchMultiplier: 4})
	_ = w.Register("cap.block", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		started <- struct{}{}
		<-release
		return "done", nil
	}))
	_ = w.Register("cap.add", addHandler)
	s.send("cap.add", []any{1}, nil, cc.WithCountdown(time.Hour)) // held: takes no prefetch slot
	first := s.send("cap.block", nil, nil)
	for range 3 {
		s.send("cap.add", []any{1}, nil)
	}
	stop := runWorker(t, w)
	<-started
	eventually(t, 5*time.Second, "prefetch", func() bool { return s.hlen("unacked") == 5 })
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	eventually(t, 5*time.Second, "waiting messages back on the queue", func() bool { return s.llen("celery") == 4 })
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if meta, err := wait(t, first, 5*time.Second); err != nil || meta.Result != "done" {
		t.Fatalf("running task was not finished on shutdown: %v %v", meta, err)
	}
	if n := s.hlen("unacked"); n != 0 {
		t.Fatalf("%d un-acked after shutdown", n)
	}
}

func TestWorkerShutdownTimeoutReturnsCtxErr(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	started := make(chan struct{})
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.block", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	s.send("cap.block", nil, nil)
	go func() { _ = w.Run(context.Background()) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := w.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded", err)
	}
	if err := w.Shutdown(context.Background()); !errors.Is(err, cc.ErrWorkerClosed) {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestTypedBinding(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	type args struct {
		TaskID string         `json:"task_id"`
		Data   map[string]any `json:"data"`
	}
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("tasks.process_task", cc.Typed(func(ctx context.Context, req *cc.Request, a args) (any, error) {
		return map[string]any{"business_task_id": a.TaskID, "data": a.Data}, nil
	}, "task_id", "data"))
	runWorker(t, w)
	meta, err := wait(t, s.send("tasks.process_task", nil, map[string]any{"task_id": "b-1", "data": map[string]any{"x": 1}}), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := meta.Result.(map[string]any); m["business_task_id"] != "b-1" {
		t.Fatalf("result %v", meta.Result)
	}
	meta, err = wait(t, s.send("tasks.process_task", []any{"b-2"}, map[string]any{"bogus": 1}), 10*time.Second)
	var te *cc.TaskError
	if !errors.As(err, &te) || te.ExcType != "TypeError" || !strings.Contains(te.Message(), "bogus") {
		t.Fatalf("mismatched args: %v, want TypeError naming the field", err)
	}
	if meta == nil || meta.Status != cc.StateFailure || meta.TaskID == "" {
		t.Fatalf("mismatched args stored %+v, want FAILURE", meta)
	}
}
