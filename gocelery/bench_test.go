package gocelery_test

import (
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// gocelery's design figures, from its source (not measured: gocelery is not run here).
const (
	// Each worker goroutine takes at most one task per tick of a 100 ms ticker.
	gocelerySecondsPerTaskPerGoroutine = 0.100
	// AsyncResult.Get checks the backend on a 50 ms ticker, the first check 50 ms after the
	// call: no round trip is shorter.
	goceleryGetFloorMs = 50.0
)

// benchClient is gocelery's README setup: one pool for broker and results, 5 workers, an
// integer add registered as a plain function.
func benchClient(b *testing.B, workers int) *gocelery.CeleryClient {
	r := celerytest.StartRedis(b)
	pool := r.Pool(0)
	backend := &gocelery.RedisCeleryBackend{Pool: pool}
	b.Cleanup(func() { backend.Close() })
	cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), backend, workers)
	if err != nil {
		b.Fatal(err)
	}
	cli.Register("worker.add", func(a, c int) int { return a + c })
	cli.StartWorker()
	b.Cleanup(cli.StopWorker)
	// One task through, so the worker is serving before timing starts.
	ar, err := cli.Delay("worker.add", 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ar.Get(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	return cli
}

// BenchmarkThroughput: b.N tasks sent with Delay, then every result read with Get, on the
// README's 5 workers. gocelery-bound-tasks/s is what gocelery's design allows at most with the
// same 5 goroutines (10 tasks/s each).
func BenchmarkThroughput(b *testing.B) {
	const workers = 5
	cli := benchClient(b, workers)
	b.ResetTimer()
	start := time.Now()
	results := make([]*gocelery.AsyncResult, b.N)
	for i := range b.N {
		ar, err := cli.Delay("worker.add", i, 1)
		if err != nil {
			b.Fatal(err)
		}
		results[i] = ar
	}
	for i, ar := range results {
		v, err := ar.Get(time.Minute)
		if err != nil || v != float64(i+1) {
			b.Fatalf("task %d: %v, %v", i, v, err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(workers/gocelerySecondsPerTaskPerGoroutine, "gocelery-bound-tasks/s")
}

// BenchmarkRoundTrip: one Delay and its Get at a time on an idle worker. gocelery-floor-ms is
// the shortest round trip gocelery's Get allows.
func BenchmarkRoundTrip(b *testing.B) {
	cli := benchClient(b, 5)
	b.ResetTimer()
	for i := range b.N {
		ar, err := cli.Delay("worker.add", i, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ar.Get(30 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/task")
	b.ReportMetric(goceleryGetFloorMs, "gocelery-floor-ms")
}
