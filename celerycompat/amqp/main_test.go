package amqp

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	celerytest.StopSharedRabbitMQ()
	os.Exit(code)
}

// newVHost gives the test a fresh vhost on the shared node.
func newVHost(t *testing.T) *celerytest.VHost {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs rabbitmq-server")
	}
	return celerytest.SharedRabbitMQ(t).VHost(t)
}

// newTransport connects to a fresh vhost, with cfg's other fields.
func newTransport(t *testing.T, cfg Config) (*Transport, *celerytest.VHost) {
	t.Helper()
	v := newVHost(t)
	cfg.URL = v.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, v
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// taskMsg is a protocol 2 message for queue q.
func taskMsg(q string, args ...any) *celerycompat.Message {
	return &celerycompat.Message{
		Task: "tasks.add", ID: uuid.NewString(), Args: args, Kwargs: map[string]any{"k": "v"},
		DeliveryInfo: celerycompat.DeliveryInfo{RoutingKey: q},
	}
}

func publish(t *testing.T, tr *Transport, msgs ...*celerycompat.Message) {
	t.Helper()
	for i, err := range tr.PublishBatch(testCtx(t), msgs) {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func consume(t *testing.T, tr *Transport, cfg celerycompat.ConsumerConfig) celerycompat.Consumer {
	t.Helper()
	c, err := tr.Consume(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// next takes exactly n deliveries within the timeout.
func next(t *testing.T, c celerycompat.Consumer, n int, timeout time.Duration) []*celerycompat.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*celerycompat.Delivery
	for len(out) < n {
		ds, err := c.Next(ctx, n-len(out))
		if err != nil {
			t.Fatalf("Next after %d of %d deliveries: %v", len(out), n, err)
		}
		out = append(out, ds...)
	}
	return out
}

// nothing asserts that no delivery arrives within d.
func nothing(t *testing.T, c celerycompat.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if ds, err := c.Next(ctx, 10); err == nil {
		t.Fatalf("want no delivery, got %d (first %s)", len(ds), ds[0].Tag)
	}
}

// jsonish is v through JSON, so that numbers compare by value whatever their Go type.
func jsonish(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// waitQueues polls the vhost's queue counts until ok holds (10 s at most).
func waitQueues(t *testing.T, v *celerytest.VHost, ok func(map[string]celerytest.Queue) bool) map[string]celerytest.Queue {
	t.Helper()
	var qs map[string]celerytest.Queue
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if qs = v.Queues(t); ok(qs) {
			return qs
		}
	}
	t.Fatalf("queues never reached the expected state: %+v", qs)
	return nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
