package celerycompat_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// Worker benchmarks. Each reports tasks/s for the Go worker and, in the same run on the same
// machine, for a real Python Celery 5.7 worker, draining the same queue of no-op tasks with
// results stored and acks_late. Run: make bench, or
//
//	go test -run '^$' -bench 'WorkerDrain|OneAtATime|RSS' -benchtime 1x ./celerycompat/

const drainTasks = 10000

// fillQueue publishes n cap.add tasks in batches.
func fillQueue(b *testing.B, s *wstack, n int, opts ...cc.SendOption) {
	b.Helper()
	const batch = 1000
	for start := 0; start < n; start += batch {
		reqs := make([]cc.TaskRequest, min(batch, n-start))
		for i := range reqs {
			reqs[i] = cc.TaskRequest{Name: "cap.add", Args: []any{start + i, 1}, Options: opts}
		}
		if _, errs := s.producer.SendBatch(context.Background(), reqs); errs[0] != nil {
			b.Fatal(errs[0])
		}
	}
}

// waitResults waits until n results are stored in DB 1 and returns how long that took.
func waitResults(b *testing.B, s *wstack, n int, start time.Time, timeout time.Duration) time.Duration {
	b.Helper()
	c := s.rpool.Get()
	defer c.Close()
	deadline := start.Add(timeout)
	for {
		got, err := redis.Int(c.Do("DBSIZE"))
		if err != nil {
			b.Fatal(err)
		}
		if got >= n {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d results after %v", got, n, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func benchStack(b *testing.B) *wstack {
	b.Helper()
	return newWStackTB(b, cc.BrokerConfig{})
}

func goDrainRate(b *testing.B, concurrency, prefetch, n int) float64 {
	s := benchStack(b)
	fillQueue(b, s, n)
	w := s.newWorkerTB(b, cc.WorkerConfig{Concurrency: concurrency, PrefetchMultiplier: prefetch})
	_ = w.Register("cap.add", addHandler)
	start := time.Now()
	stop := runWorkerTB(b, w)
	d := waitResults(b, s, n, start, 5*time.Minute)
	_ = stop()
	return float64(n) / d.Seconds()
}

func pyDrainRate(b *testing.B, n int, env []string, args ...string) float64 {
	s := benchStack(b)
	fillQueue(b, s, n)
	start := time.Now()
	celerytest.StartPyWorker(b, celerytest.CeleryNew, s.r.URL(0), s.r.URL(1), append([]string{"CAP_ACKS_LATE=1"}, env...), args...)
	d := waitResults(b, s, n, start, 20*time.Minute)
	return float64(n) / d.Seconds()
}

// BenchmarkWorkerDrain: 10,000 no-op tasks, results stored, acks_late. Go at concurrency 1 and
// 8; Python solo and prefork -c 2 (prefetch 4, Celery's default).
func BenchmarkWorkerDrain(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	for range b.N {
		goC1 := goDrainRate(b, 1, 4, drainTasks)
		goC8 := goDrainRate(b, 8, 4, drainTasks)
		pySolo := pyDrainRate(b, drainTasks, nil, "--pool", "solo", "--prefetch", "4")
		pyFork := pyDrainRate(b, drainTasks, nil, "--pool", "prefork", "--concurrency", "2", "--prefetch", "4")
		best := max(pySolo, pyFork)
		b.ReportMetric(goC1, "go_c1_tasks/s")
		b.ReportMetric(goC8, "go_c8_tasks/s")
		b.ReportMetric(pySolo, "py_solo_tasks/s")
		b.ReportMetric(pyFork, "py_prefork2_tasks/s")
		b.ReportMetric(max(goC1, goC8)/best, "go_vs_best_py_x")
	}
}

// BenchmarkOneAtATime is the original rig's configuration: concurrency 1, prefetch 1, acks_late,
// zero-duration tasks. Python is measured on fewer tasks: it manages about one a second here.
func BenchmarkOneAtATime(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	for range b.N {
		goRate := goDrainRate(b, 1, 1, 5000)
		pyRate := pyDrainRate(b, 15, nil, "--pool", "solo", "--prefetch", "1")
		b.ReportMetric(goRate, "go_tasks/s")
		b.ReportMetric(pyRate, "py_tasks/s")
		b.ReportMetric(goRate/pyRate, "go_vs_py_x")
	}
}

// BenchmarkOneSecondTasksOverhead: 1 s tasks one at a time; the metric is the time per task
// beyond the second the task itself takes.
func BenchmarkOneSecondTasksOverhead(b *testing.B) {
	const n = 10
	for range b.N {
		s := benchStack(b)
		w := s.newWorkerTB(b, cc.WorkerConfig{})
		_ = w.Register("cap.add", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
			time.Sleep(time.Second)
			return nil, nil
		}))
		fillQueue(b, s, n)
		start := time.Now()
		stop := runWorkerTB(b, w)
		d := waitResults(b, s, n, start, time.Minute)
		_ = stop()
		b.ReportMetric(float64((d-n*time.Second).Microseconds())/1000/n, "overhead_ms/task")
	}
}

// BenchmarkWorkerRSS measures the resident memory of a Go worker process (the test binary
// re-executed as a worker) running with 10,000 tasks queued.
func BenchmarkWorkerRSS(b *testing.B) {
	for range b.N {
		s := benchStack(b)
		fillQueue(b, s, drainTasks)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CB_HELPER_REDIS="+s.r.Addr(), "CB_HELPER_VT=1h", "CB_HELPER_CONCURRENCY=1")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.Atoi(strings.Fields(line)[1])
				b.ReportMetric(float64(kb)/1024, "rss_MiB")
			}
		}
	}
}

// BenchmarkWorkerDrainGo drains b.N no-op tasks (results stored, acks_late, concurrency 8):
// the Go-only figure, for profiling (-cpuprofile).
func BenchmarkWorkerDrainGo(b *testing.B) {
	s := benchStack(b)
	fillQueue(b, s, b.N)
	w := s.newWorkerTB(b, cc.WorkerConfig{Concurrency: 8, PrefetchMultiplier: 4})
	_ = w.Register("cap.add", addHandler)
	b.ResetTimer()
	start := time.Now()
	stop := runWorkerTB(b, w)
	d := waitResults(b, s, b.N, start, 5*time.Minute)
	b.StopTimer()
	_ = stop()
	b.ReportMetric(float64(b.N)/d.Seconds(), "tasks/s")
}
