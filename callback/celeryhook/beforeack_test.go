package celeryhook_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/celeryhook"
	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// The outbox hooks hold the ack: while the outbox's Redis is unreachable the task is not
// acknowledged and runs again, so its callback is delayed, never lost. (Plain hooks are logged
// and acked; Connect must opt in with BeforeAck.)
func TestConnectHoldsTheAckWhileTheOutboxIsDown(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	broker, err := cc.NewBroker(pool, cc.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", celerytest.FreePort(t))
	down := &redis.Pool{Dial: func() (redis.Conn, error) {
		return redis.Dial("tcp", dead, redis.DialConnectTimeout(100*time.Millisecond))
	}}
	defer down.Close()
	ob, err := callback.NewOutbox(down, callback.OutboxConfig{URL: "http://127.0.0.1:1/"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cc.NewWorker(broker, cc.WorkerConfig{HookRetryTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	celeryhook.Connect(w.Hooks(), ob, celeryhook.Options{}, "tasks.process_task")
	var runs atomic.Int32
	_ = w.Register("tasks.process_task", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		runs.Add(1)
		return "ok", nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	producer, err := cc.NewProducer(broker, cc.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Send(ctx, "tasks.process_task", nil, map[string]any{"task_id": "biz-1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for runs.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("task ran %d times: the ack did not wait for the outbox", runs.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
