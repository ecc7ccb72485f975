package celerycompat_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// Tests of the idle wait. Each worker here has IdleWait of an hour, so that it fetches again
// only when a wait wakes it: a task that runs proves the wake-up, without timing anything.

const noRenew = time.Hour

func TestWaitListRemovesNothing(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	for _, v := range []string{"m1", "m2", "m3"} {
		s.r.Do(0, "LPUSH", "celery", v)
	}
	before, _ := redis.Strings(s.r.Do(0, "LRANGE", "celery", 0, -1), nil)
	ready, err := s.broker.WaitList(context.Background(), "celery", time.Second)
	if err != nil || !ready {
		t.Fatalf("WaitList on a non-empty list = %v, %v; want true, nil", ready, err)
	}
	after, _ := redis.Strings(s.r.Do(0, "LRANGE", "celery", 0, -1), nil)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("list changed: %q -> %q", before, after)
	}

	// Empty list: blocks until a push, then leaves exactly the pushed element.
	done := make(chan error, 1)
	go func() {
		ready, err := s.broker.WaitList(context.Background(), "empty", 30*time.Second)
		if err == nil && !ready {
			err = fmt.Errorf("woke without a message")
		}
		done <- err
	}()
	waitBlocked(t, s, 1)
	s.r.Do(0, "LPUSH", "empty", "only")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _ := redis.Strings(s.r.Do(0, "LRANGE", "empty", 0, -1), nil); fmt.Sprint(got) != "[only]" {
		t.Fatalf("list after the wait: %q, want [only]", got)
	}

	// Timeout on an empty list: false, no error.
	ready, err = s.broker.WaitList(context.Background(), "still-empty", 50*time.Millisecond)
	if err != nil || ready {
		t.Fatalf("WaitList timeout = %v, %v; want false, nil", ready, err)
	}

	// Cancelled: returns the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { waitBlocked(t, s, 1); cancel() }()
	if _, err := s.broker.WaitList(ctx, "still-empty", 30*time.Second); err != context.Canceled {
		t.Fatalf("cancelled WaitList: %v, want context.Canceled", err)
	}
}

// waitBlocked waits until at least n clients are blocked in BLMOVE.
func waitBlocked(t *testing.T, s *wstack, n int) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%d clients blocked in BLMOVE", n), func() bool {
		return blockedClients(t, s) >= n
	})
}

func blockedClients(t *testing.T, s *wstack) int {
	list, err := redis.String(s.r.Do(0, "CLIENT", "LIST"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(list, "cmd=blmove")
}

// TestIdleWorkerWakesOnEveryList: an idle worker on two queues wakes for a message on any of
// the eight lists (two queues times four priority steps).
func TestIdleWorkerWakesOnEveryList(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Queues: []string{"a", "b"}, IdleWait: noRenew})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	for _, q := range []string{"a", "b"} {
		for _, p := range []int{0, 3, 6, 9} {
			waitBlocked(t, s, 8)
			res := s.send("cap.add", []any{p, 1}, nil, cc.WithQueue(q), cc.WithPriority(p))
			if _, err := wait(t, res, 10*time.Second); err != nil {
				t.Fatalf("queue %s priority %d: %v", q, p, err)
			}
		}
	}
}

// TestIdleWorkerKeepsKombuOrder: messages arriving at once on several queues and priorities
// while the worker waits are run priority-major, queues round-robin, as kombu orders them.
func TestIdleWorkerKeepsKombuOrder(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var mu sync.Mutex
	var got []string
	w := s.newWorker(cc.WorkerConfig{Queues: []string{"a", "b"}, IdleWait: noRenew})
	_ = w.Register("cap.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s%d", req.Queue, req.Priority))
		mu.Unlock()
		return nil, nil
	}))
	runWorker(t, w)

	// Stage the messages in DB 2 with the same producer code, then push them to DB 0 in one
	// MULTI, so that they all arrive while the worker is waiting.
	stage, err := cc.NewBroker(s.r.Pool(2), cc.BrokerConfig{DB: 2})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := cc.NewProducer(stage, cc.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sent := []struct {
		q string
		p int
	}{{"a", 9}, {"b", 0}, {"a", 0}, {"b", 6}, {"a", 3}, {"b", 0}, {"a", 0}, {"b", 9}}
	for _, m := range sent {
		if _, err := prod.Send(context.Background(), "cap.rec", nil, nil, cc.WithQueue(m.q), cc.WithPriority(m.p)); err != nil {
			t.Fatal(err)
		}
	}
	c := s.pool.Get()
	defer c.Close()
	_ = c.Send("MULTI")
	for _, q := range []string{"a", "b"} {
		for _, step := range []int{0, 3, 6, 9} {
			list := s.broker.Keys().Queue(q, step)
			raws, _ := redis.ByteSlices(s.r.Do(2, "LRANGE", list, 0, -1), nil)
			for i := len(raws) - 1; i >= 0; i-- {
				_ = c.Send("LPUSH", list, raws[i])
			}
		}
	}
	waitBlocked(t, s, 8)
	if _, err := c.Do("EXEC"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every message run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(sent)
	})
	// Priority 0: a, b alternate from a (a's two, b's two); then 3 (a), 6 (b), 9 (a before b:
	// the rotation after b6 puts a first).
	want := "[a0 b0 a0 b0 a3 b6 a9 b9]"
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != want {
		t.Fatalf("ran %v, want %s", got, want)
	}
}

// TestWorkerKilledBetweenWakeAndFetchLosesNothing SIGKILLs a worker process at the instant its
// wait has woken and before its fetch script runs: the message must still be in its queue, not
// held, and a fresh worker runs it.
func TestWorkerKilledBetweenWakeAndFetchLosesNothing(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperKillAfterWake$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CB_HELPER_REDIS="+s.r.Addr())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitBlocked(t, s, 4)
	res := s.send("cap.add", []any{2, 3}, nil)
	select {
	case err := <-exited:
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("helper ended with %v, want a SIGKILL after the wake-up", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper worker never woke")
	}
	if n, h := s.llen("celery"), s.hlen("unacked"); n != 1 || h != 0 {
		t.Fatalf("after the kill: %d waiting, %d held; want 1 waiting, 0 held", n, h)
	}
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	if _, err := wait(t, res, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestHelperKillAfterWake is not a test: it is the worker process that
// TestWorkerKilledBetweenWakeAndFetchLosesNothing starts. Its pool kills the process with SIGKILL
// when the fetch script is about to run after a BLMOVE returned a message.
func TestHelperKillAfterWake(t *testing.T) {
	addr := os.Getenv("CB_HELPER_REDIS")
	if addr == "" {
		t.Skip("not a test: the child process of TestWorkerKilledBetweenWakeAndFetchLosesNothing, which runs under CI too")
	}
	var woke atomic.Bool
	pool := &killPool{woke: &woke, p: &redis.Pool{MaxIdle: 8, Dial: func() (redis.Conn, error) { return redis.Dial("tcp", addr) }}}
	broker, err := cc.NewBroker(pool, cc.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cc.NewWorker(broker, cc.WorkerConfig{IdleWait: noRenew, DisableControl: true, WithoutHeartbeat: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Register("cap.add", addHandler)
	_ = w.Run(context.Background()) // until SIGKILL
}

type killPool struct {
	woke *atomic.Bool
	p    *redis.Pool
}

func (k *killPool) GetContext(ctx context.Context) (redis.Conn, error) {
	c, err := k.p.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	return &killConn{Conn: c, woke: k.woke}, nil
}

// killConn SIGKILLs its process on the first fetch script (EVALSHA/EVAL with more than 3 keys)
// after a BLMOVE has returned a message.
type killConn struct {
	redis.Conn
	woke *atomic.Bool
}

func (c *killConn) check(cmd string, args []any) {
	if (cmd == "EVALSHA" || cmd == "EVAL") && len(args) > 1 && fmt.Sprint(args[1]) != "3" && c.woke.Load() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
	}
}

func (c *killConn) note(cmd string, reply any, err error) {
	if cmd == "BLMOVE" && err == nil && reply != nil {
		c.woke.Store(true)
	}
}

func (c *killConn) Do(cmd string, args ...any) (any, error) {
	c.check(cmd, args)
	r, err := c.Conn.Do(cmd, args...)
	c.note(cmd, r, err)
	return r, err
}

func (c *killConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	c.check(cmd, args)
	r, err := redis.DoContext(c.Conn, ctx, cmd, args...)
	c.note(cmd, r, err)
	return r, err
}

func (c *killConn) ReceiveContext(ctx context.Context) (any, error) {
	return redis.ReceiveContext(c.Conn, ctx)
}

// TestWaitLeavesTheMessageToAPythonBRPOP: a waiter blocked before a kombu-style BRPOP does not
// keep the message from it.
func TestWaitLeavesTheMessageToAPythonBRPOP(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	woke := make(chan error, 1)
	go func() {
		_, err := s.broker.WaitList(context.Background(), "celery", 30*time.Second)
		woke <- err
	}()
	waitBlocked(t, s, 1)
	popped := make(chan []string, 1)
	go func() {
		c := s.pool.Get()
		defer c.Close()
		v, _ := redis.Strings(c.Do("BRPOP", "celery", 30))
		popped <- v
	}()
	eventually(t, 10*time.Second, "BRPOP blocked", func() bool {
		list, _ := redis.String(s.r.Do(0, "CLIENT", "LIST"), nil)
		return strings.Contains(list, "cmd=brpop")
	})
	s.r.Do(0, "LPUSH", "celery", "msg")
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	if got := <-popped; fmt.Sprint(got) != "[celery msg]" {
		t.Fatalf("BRPOP got %q, want [celery msg]", got)
	}
	if n := s.llen("celery"); n != 0 {
		t.Fatalf("%d left in the queue", n)
	}
}
