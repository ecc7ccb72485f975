package celerycompat_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestWorkerIgnoreResult(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	hooks := &cc.Hooks{}
	done := make(chan string, 2)
	hooks.OnTaskSuccess(func(ctx context.Context, e *cc.TaskSuccess) error { done <- e.Request.ID; return nil })
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.add", addHandler)
	_ = w.Register("cap.quiet", addHandler, cc.TaskIgnoreResult())
	runWorker(t, w)
	byHeader := s.send("cap.add", []any{1}, nil, cc.WithIgnoreResult())
	byTask := s.send("cap.quiet", []any{1}, nil)
	for range 2 {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("tasks did not run")
		}
	}
	for _, id := range []string{byHeader.ID, byTask.ID} {
		meta, err := s.backend.GetMeta(context.Background(), id)
		if err != nil || meta.Status != cc.StatePending {
			t.Fatalf("task %s: %v %v, want nothing stored (PENDING)", id, meta.Status, err)
		}
	}
}

func TestWorkerAcksEarly(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	inTask := make(chan int, 1)
	release := make(chan struct{})
	w := s.newWorker(cc.WorkerConfig{AcksEarly: true})
	_ = w.Register("cap.block", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		c := s.pool.Get()
		n, _ := redis.Int(c.Do("HLEN", "unacked"))
		c.Close()
		inTask <- n
		<-release
		return "ok", nil
	}))
	runWorker(t, w)
	res := s.send("cap.block", nil, nil)
	select {
	case n := <-inTask:
		close(release)
		if n != 0 {
			t.Fatalf("%d un-acked while the task ran; with AcksEarly the ack comes first", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("task did not run")
	}
	if meta, err := wait(t, res, 10*time.Second); err != nil || meta.Result != "ok" {
		t.Fatalf("%v %v", meta, err)
	}
}

func TestWorkerUnknownRequeueLeavesTaskForAnotherWorker(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	picky := s.newWorker(cc.WorkerConfig{Hostname: "picky", UnknownTasks: cc.UnknownRequeue})
	_ = picky.Register("cap.add", addHandler)
	stopPicky := runWorker(t, picky)
	res := s.send("cap.other", []any{1}, nil)
	eventually(t, 10*time.Second, "the unknown task to go round", func() bool {
		n, _ := redis.Int(s.r.Do(0, "LLEN", "celery"), nil)
		return n == 1 && s.hlen("unacked") == 0
	})
	if n := s.llen("celerybridge.deadletter"); n != 0 {
		t.Fatalf("%d dead letters; UnknownRequeue must leave the task for other workers", n)
	}
	_ = stopPicky()
	other := s.newWorker(cc.WorkerConfig{Hostname: "other"})
	_ = other.Register("cap.other", addHandler)
	runWorker(t, other)
	if meta, err := wait(t, res, 10*time.Second); err != nil || num(meta.Result) != 1 {
		t.Fatalf("the worker that knows the task: %v %v", meta, err)
	}
}

// TestWorkerRefreshKeepsLongTaskFromBeingRestored: a task running for three visibility timeouts
// is not restored by another worker's sweep, because its holder keeps refreshing it.
func TestWorkerRefreshKeepsLongTaskFromBeingRestored(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{VisibilityTimeout: time.Second})
	var runs atomic.Int32
	long := cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		runs.Add(1)
		select {
		case <-time.After(3 * time.Second):
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	a := s.newWorker(cc.WorkerConfig{Hostname: "a", RestoreInterval: 200 * time.Millisecond})
	_ = a.Register("cap.long", long)
	runWorker(t, a)
	res := s.send("cap.long", nil, nil)
	eventually(t, 5*time.Second, "the task to start", func() bool { return runs.Load() == 1 })
	b := s.newWorker(cc.WorkerConfig{Hostname: "b", RestoreInterval: 200 * time.Millisecond})
	_ = b.Register("cap.long", long)
	runWorker(t, b)
	if meta, err := wait(t, res, 10*time.Second); err != nil || meta.Result != "done" {
		t.Fatalf("%v %v", meta, err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the task ran %d times: it was restored while it ran", n)
	}
}

// TestChainAlternatesGoAndPython: a chain whose steps alternate between a task only a Go worker
// has and one only a Python worker has, each worker publishing the next step for the other.
func TestChainAlternatesGoAndPython(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			s.startPyWorker(peer, []string{"CAP_ACKS_LATE=1"}, "--prefetch", "1", "--queues", "py")
			w := s.newWorker(cc.WorkerConfig{Queues: []string{"go"}})
			_ = w.Register("go.mul", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
				return num(req.Args[0]) * num(req.Args[1]), nil
			}))
			runWorker(t, w)
			step := func(task, queue string, args ...any) cc.Signature {
				sig := cc.NewSignature(task, args, nil)
				sig.Options["queue"] = queue
				return sig
			}
			// ((1+2)*10 + 5) * 2 = 70, steps alternating Python, Go, Python, Go.
			last, err := s.producer.SendChain(context.Background(), []cc.Signature{
				step("cap.add", "py", 1, 2), step("go.mul", "go", 10), step("cap.add", "py", 5), step("go.mul", "go", 2),
			})
			if err != nil {
				t.Fatal(err)
			}
			meta, err := wait(t, last, 30*time.Second)
			if err != nil || num(meta.Result) != 70 {
				t.Fatalf("chain result %v %v, want 70", meta.Result, err)
			}
			if got := s.pyGet(peer, 10*time.Second, last.ID)[last.ID]; got.State != "SUCCESS" || num(got.Result) != 70 {
				t.Fatalf("Python get() of the chain: %+v", got)
			}
		})
	}
}

// TestWorkerStartedAfter: with StartedAfter, a task that ends sooner is stored as SUCCESS only;
// one that runs longer is STARTED while it runs and SUCCESS after, in that order.
func TestWorkerStartedAfter(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	conn, err := redis.Dial("tcp", s.r.Addr()) // not pooled: a pooled Close waits for the unsubscribe
	if err != nil {
		t.Fatal(err)
	}
	psc := redis.PubSubConn{Conn: conn}
	defer psc.Close()
	if err := psc.PSubscribe("celery-task-meta-*"); err != nil {
		t.Fatal(err)
	}
	states := make(chan [2]string, 16) // task id, status
	go func() {
		for {
			switch v := psc.Receive().(type) {
			case redis.Message:
				var meta struct {
					Status string `json:"status"`
					TaskID string `json:"task_id"`
				}
				if json.Unmarshal(v.Data, &meta) == nil {
					states <- [2]string{meta.TaskID, meta.Status}
				}
			case error:
				return
			}
		}
	}()
	release := make(chan struct{})
	w := s.newWorker(cc.WorkerConfig{TrackStarted: true, StartedAfter: 500 * time.Millisecond}) // far above a quick task, even under load
	_ = w.Register("cap.quick", addHandler)
	_ = w.Register("cap.slow", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		<-release
		return "slow", nil
	}))
	runWorker(t, w)
	next := func() [2]string {
		t.Helper()
		select {
		case st := <-states:
			return st
		case <-time.After(10 * time.Second):
			t.Fatal("no state published")
			return [2]string{}
		}
	}
	quick := s.send("cap.quick", []any{1, 2}, nil)
	if got := next(); got != [2]string{quick.ID, string(cc.StateSuccess)} {
		t.Fatalf("quick task published %v first, want SUCCESS and no STARTED", got)
	}
	slow := s.send("cap.slow", nil, nil)
	if got := next(); got != [2]string{slow.ID, string(cc.StateStarted)} {
		t.Fatalf("slow task published %v, want STARTED", got)
	}
	if meta, err := s.backend.GetMeta(context.Background(), slow.ID); err != nil || meta.Status != cc.StateStarted {
		t.Fatalf("slow task while running: %v, %v; want STARTED", meta.Status, err)
	}
	close(release)
	if got := next(); got != [2]string{slow.ID, string(cc.StateSuccess)} {
		t.Fatalf("slow task published %v, want SUCCESS", got)
	}
}
