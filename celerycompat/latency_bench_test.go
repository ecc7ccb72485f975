package celerycompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// Idle-latency benchmarks: a real Python Celery 5.7.0 producer sends one task at a time to an
// idle worker (concurrency 1, prefetch 1, acks_late, a zero-second task), pausing 100-400 ms
// between sends, and times send_task -> AsyncResult.get(). The same script times a Go worker and
// a Python 5.7.0 worker in the same run, and the producer's own floor (send_task plus get() of a
// result already stored, with no worker at all), which bounds what any worker can reach. Run:
//
//	go test -run '^$' -bench 'IdleLatency|ChainLatency|IdleCost|IdleStampede' -benchtime 1x ./celerycompat/

const latencyRounds = 60

// echoHandler is cap.echo: {"args": args, "kwargs": kwargs}.
var echoHandler = cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
	args := req.Args
	if args == nil {
		args = []any{}
	}
	return map[string]any{"args": args, "kwargs": req.Kwargs}, nil
})

// pyLatencies runs latency.py against the stack's Redis and returns the latencies in ms.
func pyLatencies(b *testing.B, s *wstack, args ...string) []float64 {
	b.Helper()
	env := []string{"BROKER_URL=" + s.r.URL(0), "BACKEND_URL=" + s.r.URL(1)}
	out := celerytest.RunPython(b, celerytest.CeleryNew, env, 10*time.Minute, "latency.py", args...)
	var rep struct {
		MS []float64 `json:"ms"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		b.Fatalf("latency.py output: %v\n%s", err, out)
	}
	return rep.MS
}

func percentile(ms []float64, p float64) float64 {
	s := slices.Clone(ms)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// goLatencies times a Go worker (the original rig's configuration) with latency.py.
func goLatencies(b *testing.B, cfg cc.WorkerConfig, args ...string) []float64 {
	s := benchStack(b)
	w := s.newWorkerTB(b, cfg)
	_ = w.Register("cap.echo", echoHandler)
	stop := runWorkerTB(b, w)
	defer stop() //nolint:errcheck // the benchmark's figure does not depend on the drain
	time.Sleep(300 * time.Millisecond)
	return pyLatencies(b, s, args...)
}

// pyWorkerLatencies times a Python 5.7.0 worker (solo, prefetch 1, acks_late) with latency.py.
func pyWorkerLatencies(b *testing.B, args ...string) []float64 {
	s := benchStack(b)
	celerytest.StartPyWorker(b, celerytest.CeleryNew, s.r.URL(0), s.r.URL(1), []string{"CAP_ACKS_LATE=1"},
		"--pool", "solo", "--prefetch", "1")
	time.Sleep(300 * time.Millisecond)
	return pyLatencies(b, s, args...)
}

func reportLatency(b *testing.B, prefix string, goMS, pyMS, floorMS []float64) {
	g50, g95 := percentile(goMS, 0.5), percentile(goMS, 0.95)
	p50, p95 := percentile(pyMS, 0.5), percentile(pyMS, 0.95)
	if floorMS != nil {
		f50 := percentile(floorMS, 0.5)
		b.ReportMetric(f50, "producer_floor_p50_ms")
		b.Logf("producer floor (send_task + get of a result already stored, no worker): p50 %.2f ms p95 %.2f ms",
			f50, percentile(floorMS, 0.95))
	}
	b.ReportMetric(g50, prefix+"go_p50_ms")
	b.ReportMetric(g95, prefix+"go_p95_ms")
	b.ReportMetric(p50, prefix+"py_p50_ms")
	b.ReportMetric(p95, prefix+"py_p95_ms")
	b.ReportMetric(p50/g50, prefix+"py_over_go_p50_x")
	b.Logf("%sgo p50 %.2f ms p95 %.2f ms; python 5.7.0 p50 %.2f ms p95 %.2f ms; python/go p50 %.1fx",
		prefix, g50, g95, p50, p95, p50/g50)
}

// BenchmarkIdleLatency: one task at a time from Python's send_task to an idle worker and back
// through AsyncResult.get(); Go worker vs Python 5.7.0 worker, same producer, same run. It also
// times the least any worker could do here (boundLatencies), which is what the producer's floor
// becomes once something shares the two cores with it, and the least a worker that loses nothing
// can do (lossFreeLatencies; pipelinedLatencies, with the fetch sent ahead of the wake).
func BenchmarkIdleLatency(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	n := strconv.Itoa(latencyRounds)
	for range b.N {
		goMS := goLatencies(b, cc.WorkerConfig{}, "--count", n)
		pyMS := pyWorkerLatencies(b, "--count", n)
		floor := pyLatencies(b, benchStack(b), "--count", n, "--floor")
		bound := boundLatencies(b, "--count", n)
		lossFree := lossFreeLatencies(b, "--count", n)
		piped := pipelinedLatencies(b, "--count", n)
		b.ReportMetric(percentile(bound, 0.5), "bound_p50_ms")
		b.ReportMetric(percentile(bound, 0.95), "bound_p95_ms")
		b.ReportMetric(percentile(lossFree, 0.5), "lossfree_p50_ms")
		b.ReportMetric(percentile(lossFree, 0.95), "lossfree_p95_ms")
		b.ReportMetric(percentile(piped, 0.5), "pipelined_p50_ms")
		b.ReportMetric(percentile(piped, 0.95), "pipelined_p95_ms")
		b.Logf("least-work bound (BRPOP, read the id, SETEX+PUBLISH in one round trip): p50 %.2f ms p95 %.2f ms",
			percentile(bound, 0.5), percentile(bound, 0.95))
		b.Logf("least-work loss-free (BLMOVE wake, then the atomic fetch, SETEX+PUBLISH, ack): p50 %.2f ms p95 %.2f ms",
			percentile(lossFree, 0.5), percentile(lossFree, 0.95))
		b.Logf("the same with the fetch pipelined behind the wait: p50 %.2f ms p95 %.2f ms",
			percentile(piped, 0.5), percentile(piped, 0.95))
		reportLatency(b, "", goMS, pyMS, floor)
	}
}

// BenchmarkChainLatency: a 10-step chain sent from Python, each step run by the worker; the
// metric is send -> get() of the last step, Go worker vs Python 5.7.0 worker.
func BenchmarkChainLatency(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	n := strconv.Itoa(latencyRounds / 3)
	for range b.N {
		goMS := goLatencies(b, cc.WorkerConfig{}, "--count", n, "--chain", "10")
		pyMS := pyWorkerLatencies(b, "--count", n, "--chain", "10")
		reportLatency(b, "chain10_", goMS, pyMS, nil)
	}
}

// commandStats returns INFO commandstats as command -> calls.
func commandStats(tb testing.TB, r *celerytest.Redis) map[string]int {
	tb.Helper()
	raw, err := redis.String(r.Do(0, "INFO", "commandstats"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(raw, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(calls)
	}
	return out
}

func statsDelta(before, after map[string]int) (total int, by map[string]int) {
	by = map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 && k != "info" {
			by[k] = d
			total += d
		}
	}
	return total, by
}

const idleWindow = 10 * time.Second

// idleRate measures the Redis commands per second of whatever is running on r, over idleWindow.
func idleRate(b *testing.B, r *celerytest.Redis) (float64, map[string]int) {
	before := commandStats(b, r)
	time.Sleep(idleWindow)
	total, by := statsDelta(before, commandStats(b, r))
	return float64(total) / idleWindow.Seconds(), by
}

// BenchmarkIdleCost: Redis commands per second caused by one idle worker (every command,
// heartbeats and sweeps included): Go with the blocking wait, Go polling as before (PollOnly),
// and Python 5.7.0 (solo), each alone on its own Redis.
func BenchmarkIdleCost(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	for range b.N {
		goRate := func(cfg cc.WorkerConfig) (float64, map[string]int) {
			s := benchStack(b)
			w := s.newWorkerTB(b, cfg)
			_ = w.Register("cap.echo", echoHandler)
			stop := runWorkerTB(b, w)
			defer stop() //nolint:errcheck
			time.Sleep(time.Second)
			return idleRate(b, s.r)
		}
		wait, waitBy := goRate(cc.WorkerConfig{})
		poll, pollBy := goRate(cc.WorkerConfig{PollOnly: true})
		s := benchStack(b)
		celerytest.StartPyWorker(b, celerytest.CeleryNew, s.r.URL(0), s.r.URL(1), []string{"CAP_ACKS_LATE=1"},
			"--pool", "solo", "--prefetch", "1")
		time.Sleep(time.Second)
		py, pyBy := idleRate(b, s.r)
		b.ReportMetric(wait, "go_wait_cmds/s")
		b.ReportMetric(poll, "go_poll_cmds/s")
		b.ReportMetric(py, "py_cmds/s")
		b.Logf("go wait %.1f/s %v\ngo poll %.1f/s %v\npython 5.7.0 %.1f/s %v", wait, waitBy, poll, pollBy, py, pyBy)
	}
}

// BenchmarkIdleStampede: 16 idle Go workers on one queue; tasks are sent one at a time (each
// waited for, with a pause). Every waiting worker wakes for each message (BLMOVE removes
// nothing) and one of them takes it; the metrics say how many fetch scripts and wake-ups that
// costs per task and what it does to the latency.
func BenchmarkIdleStampede(b *testing.B) {
	const workers, tasks = 16, 40
	for range b.N {
		s := benchStack(b)
		for i := range workers {
			w := s.newWorkerTB(b, cc.WorkerConfig{Hostname: fmt.Sprintf("w%d@stampede", i)})
			_ = w.Register("cap.echo", echoHandler)
			runWorkerTB(b, w)
		}
		time.Sleep(time.Second)
		idle, idleBy := idleRate(b, s.r)
		before := commandStats(b, s.r)
		var ms []float64
		start := time.Now()
		for i := range tasks {
			t0 := time.Now()
			res, err := s.producer.Send(context.Background(), "cap.echo", nil, map[string]any{"i": i})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := res.Get(context.Background()); err != nil {
				b.Fatal(err)
			}
			ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
			time.Sleep(50 * time.Millisecond)
		}
		elapsed := time.Since(start)
		_, by := statsDelta(before, commandStats(b, s.r))
		// Subtract the idle background (heartbeats, renewals) over the same time.
		bg := func(cmd string) float64 { return float64(idleBy[cmd]) / idleWindow.Seconds() * elapsed.Seconds() }
		fetches := (float64(by["evalsha"]+by["eval"]) - bg("evalsha") - bg("eval")) / tasks
		wakes := (float64(by["blmove"]) - bg("blmove")) / tasks
		b.ReportMetric(idle, "idle_cmds/s")
		b.ReportMetric(fetches, "scripts/task")
		b.ReportMetric(wakes, "blmove/task")
		b.ReportMetric(percentile(ms, 0.5), "p50_ms")
		b.ReportMetric(percentile(ms, 0.95), "p95_ms")
		b.Logf("16 idle workers: %.1f cmds/s idle %v; per task %.1f scripts, %.1f BLMOVE; during the run %v",
			idle, idleBy, fetches, wakes, by)
	}
}
