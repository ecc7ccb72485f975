package amqp

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// BenchmarkThroughput measures, on one RabbitMQ node and in one run: Go publish with confirms
// (always on) one message per PublishBatch call, from 16 goroutines at once (each waiting for its
// own confirm, as concurrent API requests send), and in batches of 500; Python Celery 5.7's
// apply_async in a loop (kombu py-amqp, timed inside Python by send.py) as Celery sends by
// default, without confirms, and with confirm_publish (the same guarantee as Go's); and the Go
// consumer's Next+Ack drain of everything published. Run briefly:
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./celerycompat/amqp/
func BenchmarkThroughput(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	const single, batched, batch, pyN, parallel, perSender = 2000, 20000, 500, 2000, 16, 500
	args, kwargs := []any{"3f2a"}, map[string]any{"data": map[string]any{"task_index": 1, "content": "test task 1"}}
	mk := func() *celerycompat.Message {
		return &celerycompat.Message{Task: "tasks.process_task", ID: uuid.NewString(), Args: args, Kwargs: kwargs,
			DeliveryInfo: celerycompat.DeliveryInfo{RoutingKey: "celery"}}
	}
	ctx := context.Background()
	for range b.N {
		tr, v := benchTransport(b)
		start := time.Now()
		for range single {
			if errs := tr.PublishBatch(ctx, []*celerycompat.Message{mk()}); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		singleRate := single / time.Since(start).Seconds()

		start = time.Now()
		var wg sync.WaitGroup
		failed := make(chan error, parallel)
		for range parallel {
			wg.Go(func() {
				for range perSender {
					if errs := tr.PublishBatch(ctx, []*celerycompat.Message{mk()}); errs[0] != nil {
						failed <- errs[0]
						return
					}
				}
			})
		}
		wg.Wait()
		close(failed)
		if err := <-failed; err != nil {
			b.Fatal(err)
		}
		parallelRate := parallel * perSender / time.Since(start).Seconds()

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

		rawRate := rawPublishRate(b, mk(), batched)
		pyRate := pySendRate(b, v.URL(), pyN, false)
		pyConfirmRate := pySendRate(b, v.URL(), pyN, true)

		c, err := tr.Consume(ctx, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1000})
		if err != nil {
			b.Fatal(err)
		}
		total := single + parallel*perSender + batched + 2*pyN
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
		b.ReportMetric(parallelRate, "go_single_x16_msgs/s")
		b.ReportMetric(batchRate, "go_batch_msgs/s")
		b.ReportMetric(pyRate, "py_apply_async_msgs/s")
		b.ReportMetric(pyConfirmRate, "py_apply_async_confirm_msgs/s")
		b.ReportMetric(drainRate, "go_next_ack_msgs/s")
		b.Logf("amqp publish, all Go figures confirmed: go one at a time %.0f/s (%.1fx python confirmed), 16 goroutines %.0f/s "+
			"(%.1fx python confirmed, %.1fx python default), batches of %d %.0f/s (%.1fx python default, %.1fx python confirmed); python 5.7.0 apply_async "+
			"%.0f/s by default (no confirms), %.0f/s with confirm_publish; go next+ack %.0f/s; RabbitMQ's ceiling here "+
			"(raw amqp091, one encoded message sent unconfirmed, until all are queued) %.0f/s = %.1fx python default (2 shared cores)",
			singleRate, singleRate/pyConfirmRate, parallelRate, parallelRate/pyConfirmRate, parallelRate/pyRate,
			batch, batchRate, batchRate/pyRate, batchRate/pyConfirmRate, pyRate, pyConfirmRate, drainRate, rawRate, rawRate/pyRate)
		b.ReportMetric(rawRate, "raw_publish_msgs/s")
	}
}

// pySendRate is Python Celery 5.7.0's apply_async rate into the vhost at url over n tasks, timed
// inside Python by send.py; confirm sets kombu's confirm_publish.
func pySendRate(b *testing.B, url string, n int, confirm bool) float64 {
	env := []string{"BROKER_URL=" + url, "BACKEND_URL=disabled://"}
	if confirm {
		env = append(env, "CAP_CONFIRM_PUBLISH=1")
	}
	out := celerytest.RunPython(b, celerytest.CeleryNew, env,
		5*time.Minute, "send.py", "--name", "tasks.process_task", "--args", `["3f2a"]`,
		"--kwargs", `{"data": {"task_index": 1, "content": "test task 1"}}`, "--count", strconv.Itoa(n))
	var sent struct {
		Seconds float64 `json:"seconds"`
	}
	if err := jsonUnmarshal(out, &sent); err != nil || sent.Seconds <= 0 {
		b.Fatalf("send.py: %v\n%s", err, out)
	}
	return float64(n) / sent.Seconds
}

// rawPublishRate is RabbitMQ's own publish ceiling for m on this machine: m encoded once, then
// sent n times unconfirmed on one amqp091 channel of a fresh vhost, timed until the queue holds
// all n (the broker's work, not only the client's writes).
func rawPublishRate(b *testing.B, m *celerycompat.Message, n int) float64 {
	ctx := context.Background()
	tr, v := benchTransport(b)
	defer tr.Close()
	if errs := tr.PublishBatch(ctx, []*celerycompat.Message{m}); errs[0] != nil { // declares the queue
		b.Fatal(errs[0])
	}
	parts, err := tr.cfg.Codec.EncodeParts(m)
	if err != nil {
		b.Fatal(err)
	}
	pub := publishing(parts)
	ch := v.Channel(b)
	start := time.Now()
	for range n {
		if err := ch.PublishWithContext(ctx, "", "celery", false, false, pub); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(2 * time.Millisecond) {
		q, err := ch.QueueDeclarePassive("celery", true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		if q.Messages >= n+1 {
			return float64(n) / time.Since(start).Seconds()
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d queued after 5 min", q.Messages-1, n)
		}
	}
}
