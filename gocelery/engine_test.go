package gocelery_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// queued returns the envelopes waiting in list "celery".
func queued(t *testing.T, r *celerytest.Redis) []gocelery.CeleryMessage {
	t.Helper()
	raw, err := redis.ByteSlices(r.Do(0, "LRANGE", "celery", 0, -1), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]gocelery.CeleryMessage, len(raw))
	for i, b := range raw {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestDelayWritesProtocol2ByDefault: Delay writes what Celery 4+ sends (task metadata in the
// headers, [args, kwargs, embed] body); Protocol = 1 writes gocelery's layout.
func TestDelayWritesProtocol2ByDefault(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	for _, protocol := range []int{0, 1} {
		b := gocelery.NewRedisBroker(pool)
		b.Protocol = protocol
		cli, err := gocelery.NewCeleryClient(b, gocelery.NewRedisBackend(pool), 1)
		if err != nil {
			t.Fatal(err)
		}
		ar, err := cli.Delay("worker.add", 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		msgs := queued(t, r)
		if len(msgs) != 1 {
			t.Fatalf("protocol %d: %d messages queued", protocol, len(msgs))
		}
		m := msgs[0]
		body, _ := base64.StdEncoding.DecodeString(m.Body)
		switch protocol {
		case 0:
			if m.Headers["task"] != "worker.add" || m.Headers["id"] != ar.TaskID || string(body[:1]) != "[" {
				t.Errorf("default: headers %v body %s, want protocol 2", m.Headers, body)
			}
		case 1:
			tm := m.GetTaskMessage()
			if len(m.Headers) != 0 || tm == nil || tm.Task != "worker.add" || tm.ID != ar.TaskID || len(tm.Args) != 2 {
				t.Errorf("protocol 1: headers %v body %s", m.Headers, body)
			}
		}
		r.Do(0, "DEL", "celery")
	}
}

// TestWorkerHoldsTaskInUnacked: a running task's message sits in kombu's unacked records (so a
// crash leaves it for the restore sweep), where gocelery's BRPOP had already destroyed it; it is
// acknowledged only after the result is stored.
func TestWorkerHoldsTaskInUnacked(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), backend, 2)
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	cli.Register("slow", func(n int) int {
		close(started)
		<-release
		return n
	})
	cli.StartWorker()
	defer cli.StopWorker()
	ar, err := cli.Delay("slow", 7)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("task did not start")
	}
	if n, _ := redis.Int(r.Do(0, "HLEN", "unacked"), nil); n != 1 {
		t.Errorf("while running: %d unacked records, want 1", n)
	}
	if n, _ := redis.Int(r.Do(0, "ZCARD", "unacked_index"), nil); n != 1 {
		t.Errorf("while running: %d unacked_index entries, want 1", n)
	}
	close(release)
	if v, err := ar.Get(20 * time.Second); err != nil || v != 7.0 {
		t.Fatalf("Get = %v, %v", v, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _ := redis.Int(r.Do(0, "HLEN", "unacked"), nil)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the result: %d unacked records, want 0", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGetTaskMessage: the broker's own non-waiting read gives gocelery's TaskMessage (numbers
// float64) and acknowledges it; an empty queue is (nil, nil); an undecodable message is an
// error and lands in the dead-letter list instead of vanishing.
func TestGetTaskMessage(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	b := gocelery.NewRedisBroker(pool)
	if tm, err := b.GetTaskMessage(); tm != nil || err != nil {
		t.Fatalf("empty queue: %v, %v", tm, err)
	}
	cli, err := gocelery.NewCeleryClient(b, gocelery.NewRedisBackend(pool), 1)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := cli.DelayKwargs("t", map[string]interface{}{"a": 1})
	if err != nil {
		t.Fatal(err)
	}
	tm, err := b.GetTaskMessage()
	if err != nil || tm == nil || tm.ID != ar.TaskID || tm.Task != "t" || tm.Kwargs["a"] != 1.0 || len(tm.Args) != 0 {
		t.Fatalf("GetTaskMessage = %+v, %v", tm, err)
	}
	if n, _ := redis.Int(r.Do(0, "HLEN", "unacked"), nil); n != 0 {
		t.Errorf("%d unacked records after GetTaskMessage, want 0 (the caller owns the task)", n)
	}
	r.Do(0, "LPUSH", "celery", `{"body": "bm90IGpzb24=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {}, "properties": {"delivery_tag": "x1", "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"}}}`)
	if tm, err := b.GetTaskMessage(); tm != nil || !errors.Is(err, gocelery.ErrUnsupportedMessage) {
		t.Fatalf("bad body: %v, %v; want ErrUnsupportedMessage", tm, err)
	}
	if n, _ := redis.Int(r.Do(0, "LLEN", "celery"), nil); n != 0 {
		t.Errorf("bad body still queued (%d)", n)
	}
	if dl, err := b.DeadLetters(context.Background(), 10); err != nil || len(dl) != 1 {
		t.Errorf("dead letters %+v, %v; want the bad body", dl, err)
	}
}

// TestUnknownTaskIsDeadLettered: a task no one registered is set aside with its reason, where
// gocelery logged it and dropped it, and the worker keeps serving.
func TestUnknownTaskIsDeadLettered(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	b := gocelery.NewRedisBroker(pool)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	cli, err := gocelery.NewCeleryClient(b, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	cli.Register("known", func() string { return "ok" })
	cli.StartWorker()
	defer cli.StopWorker()
	unknown, err := cli.Delay("nobody.registered")
	if err != nil {
		t.Fatal(err)
	}
	known, err := cli.Delay("known")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := known.Get(10 * time.Second); err != nil || v != "ok" {
		t.Fatalf("known task after the unknown one: %v, %v", v, err)
	}
	dl, err := b.DeadLetters(context.Background(), 10)
	if err != nil || len(dl) != 1 || !strings.Contains(string(dl[0].Raw), unknown.TaskID) {
		t.Errorf("dead letters %+v, %v; want the unknown task %s", dl, err, unknown.TaskID)
	}
}

// memBroker and memBackend stand for a user's own CeleryBroker and CeleryBackend, which the
// package can only use through the interfaces.
type memBroker struct {
	mu   sync.Mutex
	msgs []*gocelery.CeleryMessage
}

func (m *memBroker) SendCeleryMessage(c *gocelery.CeleryMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, c)
	return nil
}

func (m *memBroker) GetTaskMessage() (*gocelery.TaskMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.msgs) == 0 {
		return nil, nil
	}
	c := m.msgs[0]
	m.msgs = m.msgs[1:]
	return c.DecodeTaskMessage()
}

type memBackend struct {
	mu  sync.Mutex
	res map[string]*gocelery.ResultMessage
}

func (m *memBackend) GetResult(id string) (*gocelery.ResultMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.res[id]; ok {
		return r, nil
	}
	return nil, gocelery.ErrResultNotAvailable
}

func (m *memBackend) SetResult(id string, r *gocelery.ResultMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.res[id] = r
	return nil
}

// TestOwnBrokerAndBackend: implementations of the interfaces alone still work end to end, with
// protocol 1 messages as gocelery wrote them and failures stored, not dropped.
func TestOwnBrokerAndBackend(t *testing.T) {
	br, be := &memBroker{}, &memBackend{res: map[string]*gocelery.ResultMessage{}}
	cli, err := gocelery.NewCeleryClient(br, be, 2)
	if err != nil {
		t.Fatal(err)
	}
	cli.Register("add", func(a, b int) int { return a + b })
	cli.Register("fail", func() (int, error) { return 0, errors.New("boom") })
	ok, err := cli.Delay("add", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if tm := br.msgs[0].GetTaskMessage(); tm == nil || tm.Task != "add" || len(tm.Args) != 2 {
		t.Fatalf("message body %+v, want a protocol 1 task", tm)
	}
	if ready, err := ok.Ready(); ready || err != nil {
		t.Errorf("Ready before the worker ran = %v, %v", ready, err)
	}
	bad, err := cli.Delay("fail")
	if err != nil {
		t.Fatal(err)
	}
	cli.StartWorker()
	defer cli.StopWorker()
	if v, err := ok.Get(10 * time.Second); err != nil || v != int64(5) {
		t.Errorf("Get = %v (%T), %v; want 5", v, v, err)
	}
	if _, err := bad.Get(10 * time.Second); !errors.Is(err, gocelery.ErrTaskFailed) {
		t.Errorf("failed task: Get error %v, want ErrTaskFailed", err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := gocelery.NewCeleryClient(nil, &memBackend{}, 1); !errors.Is(err, gocelery.ErrConfig) {
		t.Errorf("nil broker: %v", err)
	}
	cli, err := gocelery.NewCeleryClient(&gocelery.RedisCeleryBroker{}, &gocelery.RedisCeleryBackend{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delay("x"); !errors.Is(err, gocelery.ErrConfig) {
		t.Errorf("broker without a pool: Delay error %v, want ErrConfig", err)
	}
	cli.StopWorker() // never started: returns
	if _, err := (&gocelery.AsyncResult{TaskID: "x"}).Get(time.Millisecond); !errors.Is(err, gocelery.ErrConfig) {
		t.Errorf("AsyncResult literal: %v", err)
	}
}

// TestRedisBrokerWithOwnBackend: the engine's worker with a backend known only through
// CeleryBackend stores both outcomes through SetResult.
func TestRedisBrokerWithOwnBackend(t *testing.T) {
	r := celerytest.StartRedis(t)
	be := &memBackend{res: map[string]*gocelery.ResultMessage{}}
	cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(r.Pool(0)), be, 2)
	if err != nil {
		t.Fatal(err)
	}
	cli.Register("add", func(a, b int) int { return a + b })
	cli.StartWorker()
	defer cli.StopWorker()
	ok, err := cli.Delay("add", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := cli.Delay("add", 2)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := ok.Get(10 * time.Second); err != nil || v != int64(5) {
		t.Errorf("Get = %v (%T), %v; want 5", v, v, err)
	}
	if _, err := bad.Get(10 * time.Second); !errors.Is(err, gocelery.ErrTaskFailed) {
		t.Errorf("one arg for two: Get error %v, want ErrTaskFailed", err)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if rm := be.res[bad.TaskID]; rm == nil || rm.Status != "FAILURE" || rm.Result.(map[string]interface{})["exc_type"] != "TypeError" {
		t.Errorf("stored failure %+v, want FAILURE TypeError", rm)
	}
}

// TestWorkerRestarts: a stopped worker starts again, as gocelery's did, on both the engine and
// a user's own broker.
func TestWorkerRestarts(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	for name, broker := range map[string]gocelery.CeleryBroker{"redis": gocelery.NewRedisBroker(pool), "own": &memBroker{}} {
		t.Run(name, func(t *testing.T) {
			var be gocelery.CeleryBackend = backend
			if name == "own" {
				be = &memBackend{res: map[string]*gocelery.ResultMessage{}}
			}
			cli, err := gocelery.NewCeleryClient(broker, be, 1)
			if err != nil {
				t.Fatal(err)
			}
			cli.Register("one", func() int { return 1 })
			for round := range 2 {
				ctx, cancel := context.WithCancel(context.Background())
				cli.StartWorkerWithContext(ctx)
				ar, err := cli.Delay("one")
				if err != nil {
					t.Fatal(err)
				}
				if v, err := ar.Get(10 * time.Second); err != nil || fmt.Sprint(v) != "1" {
					t.Fatalf("round %d: Get = %v, %v", round, v, err)
				}
				cancel()
				cli.WaitForStopWorker()
			}
		})
	}
}

// TestSendCeleryMessageHonoursETAAndExpires: a protocol 1 message built the gocelery way, with
// an ETA, does not run before it (gocelery ran it at once); one already expired is stored as
// REVOKED (gocelery logged and dropped it).
func TestSendCeleryMessageHonoursETAAndExpires(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	broker := gocelery.NewRedisBroker(pool)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	cli, err := gocelery.NewCeleryClient(broker, backend, 2)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan time.Time, 2)
	cli.Register("stamp", func() string { ran <- time.Now(); return "ran" })
	cli.StartWorker()
	defer cli.StopWorker()

	eta := time.Now().Add(2 * time.Second).UTC()
	etaText := eta.Format(time.RFC3339Nano)
	send := func(tm *gocelery.TaskMessage) {
		t.Helper()
		body, err := tm.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := broker.SendCeleryMessage(gocelery.NewCeleryMessage(body)); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Minute)
	send(&gocelery.TaskMessage{ID: "eta-1", Task: "stamp", Args: []interface{}{}, ETA: &etaText})
	send(&gocelery.TaskMessage{ID: "expired-1", Task: "stamp", Args: []interface{}{}, Expires: &past})

	deadline := time.Now().Add(20 * time.Second)
	var when time.Time
	for when.IsZero() {
		select {
		case when = <-ran:
		case <-time.After(time.Until(deadline)):
			t.Fatal("the ETA task never ran")
		}
	}
	if when.Before(eta) {
		t.Errorf("ETA task ran at %v, before its ETA %v", when, eta)
	}
	rm, err := backend.GetResult("expired-1")
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		rm, err = backend.GetResult("expired-1")
	}
	if err != nil || rm.Status != "REVOKED" {
		t.Errorf("expired task: %+v, %v; want REVOKED", rm, err)
	}
	select {
	case <-ran:
		t.Error("the expired task ran")
	default:
	}
}

// TestSetResultPublishes: SetResult stores the result as a Python worker does, SET and PUBLISH
// (gocelery only SETEXed, so Python's get() never woke), and GetResult reads it back.
func TestSetResultPublishes(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	psc := redis.PubSubConn{Conn: pool.Get()}
	defer psc.Close()
	if err := psc.Subscribe("celery-task-meta-t1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		t.Fatal("no subscription confirmation")
	}
	if _, err := backend.GetResult("t1"); !errors.Is(err, gocelery.ErrResultNotAvailable) {
		t.Fatalf("before SetResult: %v, want ErrResultNotAvailable", err)
	}
	if err := backend.SetResult("t1", &gocelery.ResultMessage{Status: "SUCCESS", Result: []interface{}{1, "a"}}); err != nil {
		t.Fatal(err)
	}
	msg, ok := psc.Receive().(redis.Message)
	if !ok {
		t.Fatal("SetResult published nothing")
	}
	var pub map[string]any
	if err := json.Unmarshal(msg.Data, &pub); err != nil || pub["status"] != "SUCCESS" || pub["task_id"] != "t1" {
		t.Errorf("published %s", msg.Data)
	}
	rm, err := backend.GetResult("t1")
	if err != nil || rm.Status != "SUCCESS" || fmt.Sprint(rm.Result) != "[1 a]" {
		t.Errorf("GetResult = %+v, %v", rm, err)
	}
}
