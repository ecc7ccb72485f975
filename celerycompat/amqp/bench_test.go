package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// BenchmarkThroughput measures, on one RabbitMQ node and in one run: Go publish with confirms
// one message per PublishBatch call and in batches of 500, Python Celery 5.7's apply_async in a
// loop (kombu py-amqp, timed inside Python by send.py), and the Go consumer's Next+Ack drain of
// everything published. Run briefly:
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./celerycompat/amqp/
func BenchmarkThroughput(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	const single, batched, batch, pyN = 2000, 20000, 500, 2000
	args, kwargs := []any{"3f2a"}, map[string]any{"data": map[string]any{"task_index": 1, "content": "test task 1"}}
	mk := func() *celerycompat.Message {
		return &celerycompat.Message{Task: "tasks.process_task", ID: uuid.NewString(), Args: args, Kwargs: kwargs,
			DeliveryInfo: celerycompat.DeliveryInfo{RoutingKey: "celery"}}
	}
	ctx := context.Background()
	for range b.N {
		v := celerytest.SharedRabbitMQ(b).VHost(b)
		tr, err := New(ctx, Config{URL: v.URL()})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for range single {
			if errs := tr.PublishBatch(ctx, []*celerycompat.Message{mk()}); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		singleRate := single / time.Since(start).Seconds()

		start = time.Now()
		for range batched / batch {
			msgs := make([]*celerycompat.Message, batch)
			for i := range msgs {
				msgs[i] = mk()
			}
			for _, err := range tr.PublishBatch(ctx, msgs) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		batchRate := batched / time.Since(start).Seconds()

		out := celerytest.RunPython(b, celerytest.CeleryNew, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=disabled://"},
			5*time.Minute, "send.py", "--name", "tasks.process_task", "--args", `["3f2a"]`,
			"--kwargs", `{"data": {"task_index": 1, "content": "test task 1"}}`, "--count", "2000")
		var sent struct {
			Seconds float64 `json:"seconds"`
		}
		if err := jsonUnmarshal(out, &sent); err != nil || sent.Seconds <= 0 {
			b.Fatalf("send.py: %v\n%s", err, out)
		}
		pyRate := pyN / sent.Seconds

		c, err := tr.Consume(ctx, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1000})
		if err != nil {
			b.Fatal(err)
		}
		total := single + batched + pyN
		start = time.Now()
		for n := 0; n < total; {
			ds, err := c.Next(ctx, 100)
			if err != nil {
				b.Fatal(err)
			}
			for _, d := range ds {
				if d.DecodeErr != nil {
					b.Fatalf("decode: %v", d.DecodeErr)
				}
				if err := c.Ack(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			n += len(ds)
		}
		drainRate := float64(total) / time.Since(start).Seconds()
		_ = c.Close(ctx)
		_ = tr.Close()
		b.ReportMetric(singleRate, "go_single_msgs/s")
		b.ReportMetric(batchRate, "go_batch_msgs/s")
		b.ReportMetric(pyRate, "py_apply_async_msgs/s")
		b.ReportMetric(drainRate, "go_next_ack_msgs/s")
		b.ReportMetric(singleRate/pyRate, "single_vs_py_x")
		b.ReportMetric(batchRate/pyRate, "batch_vs_py_x")
	}
}
