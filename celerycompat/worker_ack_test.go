package celerycompat_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// gatedAckTransport is the Redis broker with every consumer Ack held until release is closed.
type gatedAckTransport struct {
	*cc.Broker
	release chan struct{}
	waiting atomic.Int32 // Acks blocked on release
	acked   atomic.Int32 // Acks that returned without error
}

func (g *gatedAckTransport) Consume(ctx context.Context, cfg cc.ConsumerConfig) (cc.Consumer, error) {
	c, err := g.Broker.Consume(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &gatedAckConsumer{Consumer: c, g: g}, nil
}

type gatedAckConsumer struct {
	cc.Consumer
	g *gatedAckTransport
}

func (c *gatedAckConsumer) Ack(ctx context.Context, d *cc.Delivery) error {
	c.g.waiting.Add(1)
	<-c.g.release
	err := c.Consumer.Ack(ctx, d)
	if err == nil {
		c.g.acked.Add(1)
	}
	return err
}

// TestWorkerAcksOffTheExecutor: with acks_late the executor takes its next task while the ack
// of the last one is under way (as a Celery pool process does while the consumer acks), and Run
// still returns only once every ack is done. With one executor and acks held back, the second
// task must finish while the first one's ack waits; a warm stop must wait for both acks.
func TestWorkerAcksOffTheExecutor(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	g := &gatedAckTransport{Broker: s.broker, release: make(chan struct{})}
	w, err := cc.NewWorker(g, cc.WorkerConfig{Concurrency: 1, Backend: s.backend})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register("t.noop", cc.HandlerFunc(func(context.Context, *cc.Request) (any, error) { return "ok", nil })); err != nil {
		t.Fatal(err)
	}
	first, second := s.send("t.noop", nil, nil), s.send("t.noop", nil, nil)
	stop := runWorker(t, w)
	var once sync.Once
	release := func() { once.Do(func() { close(g.release) }) }
	t.Cleanup(release) // runs before runWorker's stop: a failing test does not wait on held acks
	for _, r := range []*cc.AsyncResult{first, second} {
		if _, err := wait(t, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Both results are stored, and no ack can have returned (release is still open): the first
	// ack did not hold the one executor (if it did, the second result never comes and wait
	// fails). The second ack starts just after its result is stored.
	eventually(t, 5*time.Second, "both acks under way", func() bool { return g.waiting.Load() == 2 })
	if n := s.hlen("unacked"); n != 2 {
		t.Fatalf("%d messages held while their acks wait, want 2", n)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with 2 acks still under way", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if n := g.acked.Load(); n != 2 {
		t.Fatalf("%d acks done when Run returned, want 2", n)
	}
	if n := s.hlen("unacked"); n != 0 {
		t.Fatalf("%d messages still held after Run returned, want 0", n)
	}
}
