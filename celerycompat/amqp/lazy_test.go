package amqp

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// A Lazy transport starts while RabbitMQ is unreachable, as a Celery app and worker do: New and
// Consume succeed, Ping and PublishBatch answer ErrBroker, and once the broker is reachable the
// consumer connects by itself and takes what is published.
func TestLazyStartsWhileBrokerDown(t *testing.T) {
	v := newVHost(t)
	g, u := celerytest.GateURL(t, v.URL())
	ctx := testCtx(t)
	if _, err := New(ctx, Config{URL: u}); !errors.Is(err, celerycompat.ErrBroker) {
		t.Fatalf("New without Lazy while the broker is down: %v, want ErrBroker", err)
	}
	tr, err := New(ctx, Config{URL: u, Lazy: true, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("New, Lazy, broker down: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := tr.Ping(pctx); !errors.Is(err, celerycompat.ErrBroker) {
		t.Errorf("Ping, broker down: %v, want ErrBroker", err)
	}
	cancel()
	if errs := tr.PublishBatch(ctx, []*celerycompat.Message{taskMsg("celery", 0)}); !errors.Is(errs[0], celerycompat.ErrBroker) {
		t.Errorf("PublishBatch, broker down: %v, want ErrBroker", errs[0])
	}
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 4})
	nothing(t, c, 200*time.Millisecond)

	g.Forward()
	m := taskMsg("celery", 1)
	publish(t, tr, m)
	d := next(t, c, 1, 20*time.Second)[0]
	if d.Message.ID != m.ID {
		t.Fatalf("got %s, want %s", d.Message.ID, m.ID)
	}
	if err := c.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := tr.Ping(ctx); err != nil {
		t.Errorf("Ping, broker up: %v", err)
	}
}

// Ping answers within its context when the broker hangs (a paused process keeps TCP open), and
// concurrent Pings share one round trip instead of each leaving one behind.
func TestPingHungBroker(t *testing.T) {
	v := newVHost(t)
	g, u := celerytest.GateURL(t, v.URL())
	g.Hang()
	tr, err := New(testCtx(t), Config{URL: u, Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	t.Cleanup(g.Drop) // runs first: ends the hung handshake, which holds the dial's lock
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := tr.Ping(ctx)
			if !errors.Is(err, celerycompat.ErrBroker) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Ping, hung broker: %v, want ErrBroker and DeadlineExceeded", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("Ping took %v with a 300 ms deadline", el)
			}
		}()
	}
	wg.Wait()
	if n := g.Accepted(); n != 1 {
		t.Errorf("%d connections reached the hung broker from 10 Pings, want 1 shared attempt", n)
	}
}

// A dial stalled by a hung broker (up to its 30 s handshake deadline) does not hold up callers
// past their own context: a publish behind it gives up when its ctx ends, as does Close's
// neighbour Ping, and Close does not wait for the dial at all.
func TestHungDialHonoursCallersContext(t *testing.T) {
	v := newVHost(t)
	g, u := celerytest.GateURL(t, v.URL())
	g.Hang()
	tr, err := New(testCtx(t), Config{URL: u, Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Drop) // ends the hung handshake at the end
	pctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_ = tr.Ping(pctx) // leaves its dial running against the hung broker
	cancel()
	for g.Accepted() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := tr.PublishBatch(ctx, []*celerycompat.Message{taskMsg("celery", 1)})
	if el := time.Since(start); !errors.Is(errs[0], celerycompat.ErrBroker) || el > 2*time.Second {
		t.Errorf("PublishBatch behind a hung dial: %v after %v, want ErrBroker within about 300 ms", errs[0], el)
	}
	start = time.Now()
	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close behind a hung dial took %v", el)
	}
}

// TestCloseHungBroker: when the broker hangs with connections open (a paused process), the
// Consumer's Close returns when its context ends and the Transport's Close within its bound,
// not after the heartbeat (120 s by default) declares the connection dead.
func TestCloseHungBroker(t *testing.T) {
	v := newVHost(t)
	g, u := celerytest.GateURL(t, v.URL())
	g.Forward()
	tr, err := New(testCtx(t), Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, tr, taskMsg("celery", 1))
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 4})
	d := next(t, c, 1, 10*time.Second)[0]
	g.Pause()
	// The ack goes into the hung socket; the broker will deliver the message again.
	if err := c.Ack(testCtx(t), d); err != nil {
		t.Fatal(err)
	}
	// Each Close runs aside, so that one that hangs fails the test instead of stalling it.
	within := func(what string, limit time.Duration, close func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- close() }()
		select {
		case err := <-done:
			return err
		case <-time.After(limit):
			g.Drop() // frees the hung call, and the cleanups behind it
			t.Fatalf("%s still waiting after %v on a hung broker", what, limit)
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := within("consumer Close", 3*time.Second, func() error { return c.Close(ctx) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("consumer Close on a hung broker: %v, want DeadlineExceeded", err)
	}
	err = within("transport Close", closeTimeout+3*time.Second, tr.Close)
	if !errors.Is(err, celerycompat.ErrBroker) {
		t.Errorf("transport Close on a hung broker: %v, want ErrBroker (close-ok never came)", err)
	}
}
