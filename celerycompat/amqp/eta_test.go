package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// TestETAOnIdleQueue: a countdown task alone on an idle queue runs when its time comes, with one
// worker slot. The worker holds its slot in Consumer.Next while the queue is empty, and the ETA
// task needs that slot: Next must return now and then (the Consumer contract), not wait for the
// next message for ever.
func TestETAOnIdleQueue(t *testing.T) {
	tr, _ := newTransport(t, Config{})
	w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: "eta@amqp", Concurrency: 1,
		WithoutMingle: true})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan time.Time, 1)
	if err := w.Register("tasks.add", celerycompat.HandlerFunc(func(context.Context, *celerycompat.Request) (any, error) {
		ran <- time.Now()
		return nil, nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()

	m := taskMsg("celery")
	eta := time.Now().Add(time.Second)
	m.ETA = &eta
	publish(t, tr, m)
	select {
	case at := <-ran:
		if at.Before(eta) {
			t.Fatalf("ran %v before its ETA", eta.Sub(at))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the countdown task did not run within 15 s on an idle queue")
	}
}

// TestSetQueuesEmpty: cancelling the last queue consumes nothing (Next returns none) until a
// queue is added back, as on Redis; the message waits in its queue meanwhile.
func TestSetQueuesEmpty(t *testing.T) {
	tr, _ := newTransport(t, Config{})
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 4})
	ctx := testCtx(t)
	if err := c.SetQueues(ctx, nil); err != nil {
		t.Fatalf("SetQueues(none): %v", err)
	}
	publish(t, tr, taskMsg("celery"))
	if ds, err := c.Next(ctx, 4); err != nil || len(ds) != 0 {
		t.Fatalf("Next with no queue: %d deliveries, %v; want none", len(ds), err)
	}
	if err := c.SetQueues(ctx, []string{"celery"}); err != nil {
		t.Fatal(err)
	}
	var ds []*celerycompat.Delivery
	for deadline := time.Now().Add(10 * time.Second); len(ds) == 0 && time.Now().Before(deadline); {
		var err error
		if ds, err = c.Next(ctx, 4); err != nil {
			t.Fatal(err)
		}
	}
	if len(ds) != 1 {
		t.Fatalf("after the queue came back: %d deliveries, want 1", len(ds))
	}
	if err := c.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
}
