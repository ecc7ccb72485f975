package amqp

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// drainN is how many messages each contender of BenchmarkDrain drains: DRAIN_AMQP_N, default
// 5000.
func drainN(b *testing.B) int {
	n := 5000
	if v := os.Getenv("DRAIN_AMQP_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("DRAIN_AMQP_N=%q: want a number >= 100", v)
		}
	}
	return n
}

// BenchmarkDrain compares, over one RabbitMQ node in one run, draining n pre-published cap.echo
// messages (acks_late, the result stored in Redis, as the task's one effect) by:
//
//   - the Go worker (celerycompat.NewWorker on this transport, concurrency 8, prefetch 16);
//   - Python Celery 5.7.0's worker, -P solo, -P prefork -c 2 (one process per core) and
//     -P threads -c 8 (prefetch 16, acks_late);
//   - and RabbitMQ's own ceiling for the same queue: raw amqp091 basic.consume + basic.ack of
//     the messages, no decoding, no task, no result.
//
// Each contender gets a fresh vhost holding the same n messages and a fresh Redis; the clock
// starts when the worker is ready (Python's start-up is not counted) and stops when the n-th
// result is stored. Run:
//
//	go test -run '^$' -bench Drain -benchtime 1x ./celerycompat/amqp/
func BenchmarkDrain(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	n := drainN(b)
	for range b.N {
		goRate := drainGo(b, n)
		pySolo := drainPython(b, n, "--pool", "solo", "--prefetch", "16")
		pyPrefork := drainPython(b, n, "--pool", "prefork", "--concurrency", "2", "--prefetch", "16")
		pyThreads := drainPython(b, n, "--pool", "threads", "--concurrency", "8", "--prefetch", "16")
		raw := drainRaw(b, n)
		best := max(pySolo, pyPrefork, pyThreads)
		b.ReportMetric(goRate, "go_tasks/s")
		b.ReportMetric(pySolo, "py_solo_tasks/s")
		b.ReportMetric(pyPrefork, "py_prefork2_tasks/s")
		b.ReportMetric(pyThreads, "py_threads8_tasks/s")
		b.ReportMetric(raw, "raw_consume_ack_msgs/s")
		b.ReportMetric(goRate/best, "go_vs_best_py_x")
		b.Logf("amqp drain of %d: go %.0f/s; python 5.7.0 solo %.0f/s, prefork -c 2 %.0f/s, threads -c 8 %.0f/s; "+
			"go/best python %.1fx; raw amqp091 consume+ack (RabbitMQ's ceiling here) %.0f/s (2 shared cores)",
			n, goRate, pySolo, pyPrefork, pyThreads, goRate/best, raw)
	}
}

// benchTransport is a Transport on a fresh vhost of the shared node; the caller closes it.
func benchTransport(b *testing.B) (*Transport, *celerytest.VHost) {
	b.Helper()
	v := celerytest.SharedRabbitMQ(b).VHost(b)
	tr, err := New(context.Background(), Config{URL: v.URL()})
	if err != nil {
		b.Fatal(err)
	}
	return tr, v
}

// fill publishes n cap.echo messages to the celery queue of a fresh vhost and returns its URL.
func fill(b *testing.B, n int) string {
	b.Helper()
	ctx := context.Background()
	tr, v := benchTransport(b)
	defer tr.Close()
	kwargs := map[string]any{"task_id": "7d6f1a52", "data": map[string]any{"user": "alice", "items": []any{1, 2, 3}}}
	for start := 0; start < n; start += 500 {
		msgs := make([]*celerycompat.Message, min(500, n-start))
		for i := range msgs {
			msgs[i] = &celerycompat.Message{Task: "cap.echo", ID: uuid.NewString(), Kwargs: kwargs,
				DeliveryInfo: celerycompat.DeliveryInfo{RoutingKey: "celery"}}
		}
		for _, err := range tr.PublishBatch(ctx, msgs) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	return v.URL()
}

// waitStored waits until db 1 of rd holds n results and returns the time since start.
func waitStored(b *testing.B, rd *celerytest.Redis, n int, start time.Time) time.Duration {
	b.Helper()
	c := rd.Pool(1).Get()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		got, err := redis.Int(c.Do("DBSIZE"))
		if err != nil {
			b.Fatal(err)
		}
		if got >= n {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d results after 10 min", got, n)
		}
	}
}

func drainGo(b *testing.B, n int) float64 {
	url := fill(b, n)
	rd := celerytest.StartRedis(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := New(ctx, Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	backend, err := celerycompat.NewBackend(rd.Pool(1), celerycompat.BackendConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	// Without mingle, as the Python worker below runs (--without-mingle): on RabbitMQ mingle waits
	// its full second for replies, which would count as drain time.
	w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Concurrency: 8, PrefetchMultiplier: 16, Backend: backend,
		WithoutMingle: true})
	if err != nil {
		b.Fatal(err)
	}
	echo := func(_ context.Context, req *celerycompat.Request) (any, error) {
		return map[string]any{"args": req.Args, "kwargs": req.Kwargs}, nil
	}
	if err := w.Register("cap.echo", celerycompat.HandlerFunc(echo)); err != nil {
		b.Fatal(err)
	}
	// Timed from the worker's ready signal, as drainPython times Python's worker from its
	// "ready" line: connecting and declaring are not drain time for either.
	ready := make(chan time.Time, 1)
	w.Hooks().OnWorkerReady(func(context.Context, *celerycompat.WorkerReady) error {
		ready <- time.Now()
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	start := <-ready
	before, err := redis.Int(rd.Do(1, "DBSIZE"), nil)
	if err != nil {
		b.Fatal(err)
	}
	d := waitStored(b, rd, n, start)
	cancel()
	<-done
	return float64(n-before) / d.Seconds()
}

func drainPython(b *testing.B, n int, args ...string) float64 {
	url := fill(b, n)
	rd := celerytest.StartRedis(b)
	w := celerytest.StartPyWorker(b, celerytest.CeleryNew, url, rd.URL(1), []string{"CAP_ACKS_LATE=1"},
		append(args, "--", "--without-mingle", "--without-gossip")...)
	defer w.Kill()
	start := time.Now()
	before, err := redis.Int(rd.Do(1, "DBSIZE"), nil)
	if err != nil {
		b.Fatal(err)
	}
	d := waitStored(b, rd, n, start)
	return float64(n-before) / d.Seconds()
}

// drainRaw is RabbitMQ's own rate for the queue: one amqp091 consumer, prefetch 128, acking each
// message as it comes, nothing else.
func drainRaw(b *testing.B, n int) float64 {
	ch := celerytest.DialChannel(b, fill(b, n))
	if err := ch.Qos(128, 0, false); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ds, err := ch.Consume("celery", "raw", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		d, ok := <-ds
		if !ok {
			b.Fatalf("consumer closed after %d of %d", i, n)
		}
		if err := d.Ack(false); err != nil {
			b.Fatal(fmt.Errorf("ack: %w", err))
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
