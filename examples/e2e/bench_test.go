package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/examples/internal/loadtest"
)

// The benchmarks compare the Go services with the original Python ones in the same run, on the
// same machine, through the same client (the load tester), as separate processes on a fresh
// redis-server each:
//
//	go test ./examples/e2e -run '^$' -bench . -benchtime 5x
//
// BenchmarkSubmit: 1000 submissions (the original's test_batch_submit.py load) to the Go API
// and to the original FastAPI main_api.py (uvicorn, one process), with no worker running, at the
// original's concurrency (all at once) and at 100. Metrics: seconds per 1000 and requests/s.
//
// BenchmarkEndToEnd: zero-duration tasks, worker concurrency 1 (one at a time, as the original),
// submissions all at once; tasks/s from the first submission to the last callback. The Go rig
// runs 1000 tasks, with the receiver's SQLite store (the default) and with CALLBACK_DB=:memory:;
// the original Python rig (main_api.py + tasks.py worker + callback_receiver.py, callbacks counted
// in the receiver's output) runs CELERYBRIDGE_BENCH_PY_N tasks (default 100).
//
// Every iteration must be exact (all submissions accepted; for end to end, a consistent report).

// procCPU is the user+system CPU time pid has used so far (10 ms resolution), 0 if unknown.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at state; utime and stime
	// are fields 14 and 15 of the whole line, 12 and 13 after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func BenchmarkSubmit(b *testing.B) {
	const n = 1000
	for _, impl := range []string{"go", "python"} {
		for _, conc := range []int{n, 100} {
			b.Run(fmt.Sprintf("%s/concurrency=%d", impl, conc), func(b *testing.B) {
				r := newRig(b)
				if impl == "go" {
					r.goAPI()
				} else {
					r.pyAPI()
				}
				ctx := context.Background()
				cfg := loadtest.Config{APIURL: r.apiURL(), N: n, Concurrency: conc}
				warm := cfg
				warm.N = 20
				if _, err := loadtest.Submit(ctx, warm); err != nil {
					b.Fatal(err)
				}
				var secs []float64
				b.ResetTimer()
				for range b.N {
					sub, err := loadtest.Submit(ctx, cfg)
					if err != nil {
						b.Fatal(err)
					}
					if s := sub.Summary(); s.Failed > 0 {
						b.Fatalf("%d of %d submissions failed: %v", s.Failed, s.Total, s.Errors)
					}
					secs = append(secs, sub.Duration.Seconds())
					b.StopTimer()
					r.redis.do("DEL", "celery") // no worker runs: keep the queue from growing
					b.StartTimer()
				}
				m := median(secs)
				b.ReportMetric(m, "s/1000")
				b.ReportMetric(n/m, "req/s")
			})
		}
	}
}

func BenchmarkEndToEnd(b *testing.B) {
	pyN := envInt("CELERYBRIDGE_BENCH_PY_N", 100)
	for _, setup := range []struct {
		name string
		n    int
	}{{"go", 1000}, {"go-memory-store", 1000}, {"python", pyN}} {
		b.Run(setup.name, func(b *testing.B) {
			r := newRig(b)
			var src loadtest.Source
			var procs []*proc // receiver, worker, API
			switch setup.name {
			case "python":
				recv := r.pyReceiver()
				procs = append(procs, recv, r.pyWorker("py-worker"), r.pyAPI())
				src = &loadtest.LogSource{Path: recv.logPath}
			default:
				if setup.name == "go-memory-store" {
					p := startProc(b, "go-receiver", r.dir, r.env(fmt.Sprintf("PORT=%d", r.recvPort), "CALLBACK_DB=:memory:"), bin(b, "callback_receiver"))
					p.waitHTTP(r.receiverURL()+"/healthz", 20*time.Second)
					procs = append(procs, p)
				} else {
					procs = append(procs, r.goReceiver())
				}
				procs = append(procs, r.goWorker("go-worker"), r.goAPI())
			}
			// CPU per task of each process (and of the load tester, this process), from
			// /proc: where the 2 cores go.
			pids := []int{os.Getpid(), r.redis.PID()}
			for _, p := range procs {
				pids = append(pids, p.cmd.Process.Pid)
			}
			cpu0 := make([]time.Duration, len(pids))
			for i, pid := range pids {
				cpu0[i] = procCPU(pid)
			}
			var rates, secs []float64
			b.ResetTimer()
			for range b.N {
				rep, err := r.load(setup.n, 5*time.Minute, src)
				if rep == nil || err != nil || !rep.Consistent() || rep.Submission.Failed > 0 {
					b.Fatalf("inconsistent run: %v %+v", err, rep)
				}
				rates = append(rates, rep.TasksPerSecond)
				secs = append(secs, rep.EndToEnd.Seconds())
			}
			b.ReportMetric(median(rates), "tasks/s")
			b.ReportMetric(median(secs), "s/run")
			b.ReportMetric(float64(setup.n), "tasks/run")
			tasks := float64(setup.n * b.N)
			for i, unit := range []string{"loadtest", "redis", "receiver", "worker", "api"} {
				b.ReportMetric(float64((procCPU(pids[i])-cpu0[i]).Microseconds())/tasks, unit+"-cpu-µs/task")
			}
		})
	}
}
