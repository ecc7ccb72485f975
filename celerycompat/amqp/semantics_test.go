package amqp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestPriorities: with task_queue_max_priority the queue is declared with x-max-priority and the
// broker delivers the highest priority first.
func TestPriorities(t *testing.T) {
	tr, v := newTransport(t, Config{QueueMaxPriority: 10})
	var msgs []*celerycompat.Message
	for _, p := range []int{1, 9, 5, 0, 7} {
		m := taskMsg("celery", p)
		m.Priority = p
		msgs = append(msgs, m)
	}
	publish(t, tr, msgs...)
	args := v.List(t, "list_queues", "name", "arguments")
	if len(args) != 1 || !strings.Contains(jsonText(args[0]["arguments"]), `"x-max-priority"`) {
		t.Fatalf("queue arguments: %v", args)
	}
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1})
	var got []int
	for range msgs {
		d := next(t, c, 1, 10*time.Second)[0]
		got = append(got, d.Message.Priority)
		if err := c.Ack(testCtx(t), d); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{9, 7, 5, 1, 0}; jsonText(got) != jsonText(want) {
		t.Fatalf("delivery order by priority %v, want %v", got, want)
	}
}

// TestHoldRaisesPrefetch: with prefetch 1 a second message waits while the first is held;
// Hold(1) (an ETA task waiting for its time) raises the prefetch and the second one arrives.
func TestHoldRaisesPrefetch(t *testing.T) {
	tr, v := newTransport(t, Config{})
	publish(t, tr, taskMsg("celery", 1), taskMsg("celery", 2))
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1})
	first := next(t, c, 1, 10*time.Second)[0]
	nothing(t, c, 500*time.Millisecond)
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Ready == 1 && qs["celery"].Unacked == 1 })
	c.Hold(1)
	second := next(t, c, 1, 10*time.Second)[0]
	c.Hold(-1)
	for _, d := range []*celerycompat.Delivery{first, second} {
		if err := c.Ack(testCtx(t), d); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRequeue: a requeued message is delivered again, marked redelivered.
func TestRequeue(t *testing.T) {
	tr, _ := newTransport(t, Config{})
	m := taskMsg("celery", 1)
	publish(t, tr, m)
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 4})
	d := next(t, c, 1, 10*time.Second)[0]
	if err := c.Requeue(testCtx(t), d, true); err != nil {
		t.Fatal(err)
	}
	d2 := next(t, c, 1, 10*time.Second)[0]
	if d2.Message.ID != m.ID || !d2.Message.Redelivered || d2.Tag == d.Tag {
		t.Fatalf("after requeue: %s redelivered=%v tag %s (was %s)", d2.Message.ID, d2.Message.Redelivered, d2.Tag, d.Tag)
	}
	if err := c.Ack(testCtx(t), d2); err != nil {
		t.Fatal(err)
	}
}

// TestSetQueues: after SetQueues returns, a removed queue's messages stay in it and the added
// queue is consumed.
func TestSetQueues(t *testing.T) {
	tr, v := newTransport(t, Config{})
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"a"}, Prefetch: 4})
	if err := c.SetQueues(testCtx(t), []string{"b"}); err != nil {
		t.Fatal(err)
	}
	ma, mb := taskMsg("a", 1), taskMsg("b", 2)
	publish(t, tr, ma, mb)
	d := next(t, c, 1, 10*time.Second)[0]
	if d.Message.ID != mb.ID || d.Queue != "b" {
		t.Fatalf("got %s from %s, want %s from b", d.Message.ID, d.Queue, mb.ID)
	}
	nothing(t, c, 300*time.Millisecond)
	if err := c.Ack(testCtx(t), d); err != nil {
		t.Fatal(err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["a"].Ready == 1 && qs["a"].Consumers == 0 && qs["b"].Consumers == 1
	})
}

func jsonText(v any) string {
	b, _ := jsonMarshal(v)
	return string(b)
}

// TestTransportCloseEndsNext: closing the Transport under a consumer makes a waiting Next return
// ErrClosed instead of waiting for ever.
func TestTransportCloseEndsNext(t *testing.T) {
	tr, _ := newTransport(t, Config{})
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1})
	errc := make(chan error, 1)
	go func() { _, err := c.Next(testCtx(t), 1); errc <- err }()
	time.Sleep(200 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Transport.Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Next still waiting 10 s after Transport.Close")
	}
}

// TestSettleNotHeld: a second settlement of a delivery (or one of another consumer's delivery)
// fails with ErrNotHeld and sends nothing. It must not wrap ErrBroker: the worker retries broker
// errors until they succeed, and this one never would.
func TestSettleNotHeld(t *testing.T) {
	tr, v := newTransport(t, Config{})
	publish(t, tr, taskMsg("celery", 1), taskMsg("celery", 2))
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 4})
	ds := next(t, c, 2, 10*time.Second)
	if err := c.Ack(testCtx(t), ds[0]); err != nil {
		t.Fatal(err)
	}
	other := *ds[1]
	other.Tag = "999." + other.Tag // a tag this consumer never handed out
	for name, settle := range map[string]func() error{
		"ack twice":       func() error { return c.Ack(testCtx(t), ds[0]) },
		"requeue acked":   func() error { return c.Requeue(testCtx(t), ds[0], true) },
		"dead-letter":     func() error { return c.DeadLetter(testCtx(t), ds[0], "test") },
		"foreign ack":     func() error { return c.Ack(testCtx(t), &other) },
		"foreign requeue": func() error { return c.Requeue(testCtx(t), &other, false) },
	} {
		err := settle()
		if !errors.Is(err, ErrNotHeld) || errors.Is(err, celerycompat.ErrBroker) {
			t.Errorf("%s: %v; want ErrNotHeld, not ErrBroker", name, err)
		}
	}
	// The channel survived (no PRECONDITION_FAILED for an unknown tag): the held one still acks.
	if err := c.Ack(testCtx(t), ds[1]); err != nil {
		t.Fatal(err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Ready == 0 && qs["celery"].Unacked == 0 })
}
