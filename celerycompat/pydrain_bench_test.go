package celerycompat_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// Drain of messages written by Python: the queue is filled by Python Celery 5.7.0's send_task
// (kwargs task_id and data, as the original rig's API sends process_task), then drained by a bare
// Go worker on the public API (concurrency 8, prefetch 16, results stored, acks_late) and, in the
// same run, by Python Celery 5.7.0 solo and prefork -c 2 (prefetch 16). Run:
//
//	go test -run '^$' -bench 'DrainPythonWritten' -benchtime 1x ./celerycompat/
//
// BenchmarkDrainPythonWrittenGo is the Go figure alone, for -cpuprofile.

const pyWrittenKwargs = `{"task_id": "7d6f1a52-3c1b-4f0e-9a57-0d3b8f1c2e4a", "data": {"user": "alice", "items": [1, 2, 3], "note": "process me"}}`

// pyWrittenQueue fills a Redis with n cap.echo messages written by Python's send_task and returns
// the queue list, DUMPed, to RESTORE into each contender's fresh Redis.
func pyWrittenQueue(b *testing.B, n int) []byte {
	b.Helper()
	r := celerytest.StartRedis(b)
	env := []string{"BROKER_URL=" + r.URL(0), "BACKEND_URL=" + r.URL(1)}
	celerytest.RunPython(b, celerytest.CeleryNew, env, 10*time.Minute, "send.py",
		"--name", "cap.echo", "--kwargs", pyWrittenKwargs, "--count", itoa(n))
	dump, err := redis.Bytes(r.Do(0, "DUMP", "celery"), nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Stop()
	return dump
}

func itoa(n int) string { return strconv.Itoa(n) }

// restoreQueue puts the dumped queue into the stack's broker DB and declares the queue.
func restoreQueue(b *testing.B, s *wstack, dump []byte) {
	b.Helper()
	s.r.Do(0, "RESTORE", "celery", 0, dump, "REPLACE")
	s.r.Do(0, "SADD", "_kombu.binding.celery", cc.BindingMember("celery", "", "celery"))
}

func goPyWrittenRate(b *testing.B, dump []byte, n int) float64 {
	s := benchStack(b)
	restoreQueue(b, s, dump)
	w := s.newWorkerTB(b, cc.WorkerConfig{Concurrency: 8, PrefetchMultiplier: 16})
	_ = w.Register("cap.echo", echoHandler)
	start := time.Now()
	stop := runWorkerTB(b, w)
	d := waitResults(b, s, n, start, 5*time.Minute)
	_ = stop()
	if testing.Verbose() {
		cpu, _ := redis.String(s.r.Do(0, "INFO", "cpu"), nil)
		st, _ := redis.String(s.r.Do(0, "INFO", "commandstats"), nil)
		b.Logf("redis after the drain:\n%s\n%s", cpu, st)
	}
	return float64(n) / d.Seconds()
}

// pyPyWrittenRate times a Python worker from the moment it reports ready (its start-up of a
// second or two is not counted against it), over the results stored after that moment.
func pyPyWrittenRate(b *testing.B, dump []byte, n int, args ...string) float64 {
	s := benchStack(b)
	restoreQueue(b, s, dump)
	celerytest.StartPyWorker(b, celerytest.CeleryNew, s.r.URL(0), s.r.URL(1), []string{"CAP_ACKS_LATE=1"}, args...)
	start := time.Now()
	before, err := redis.Int(s.r.Do(1, "DBSIZE"), nil)
	if err != nil {
		b.Fatal(err)
	}
	d := waitResults(b, s, n, start, 20*time.Minute)
	return float64(n-before) / d.Seconds()
}

// BenchmarkDrainPythonWritten: 10,000 messages written by Python's send_task; Go (concurrency
// 8, prefetch 16) vs Python 5.7.0 solo and prefork -c 2 (prefetch 16), same run.
func BenchmarkDrainPythonWritten(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	for range b.N {
		dump := pyWrittenQueue(b, drainTasks)
		goRate := goPyWrittenRate(b, dump, drainTasks)
		pySolo := pyPyWrittenRate(b, dump, drainTasks, "--pool", "solo", "--prefetch", "16")
		pyFork := pyPyWrittenRate(b, dump, drainTasks, "--pool", "prefork", "--concurrency", "2", "--prefetch", "16")
		best := max(pySolo, pyFork)
		b.ReportMetric(goRate, "go_tasks/s")
		b.ReportMetric(pySolo, "py_solo_tasks/s")
		b.ReportMetric(pyFork, "py_prefork2_tasks/s")
		b.ReportMetric(goRate/best, "go_vs_best_py_x")
		b.Logf("python-written drain: go %.0f/s; python 5.7.0 solo %.0f/s, prefork -c 2 %.0f/s; go/best python %.1fx",
			goRate, pySolo, pyFork, goRate/best)
	}
}

// BenchmarkDrainPythonWrittenGo drains 10,000 Python-written messages with the Go worker only
// (sub-benchmark python), and the same messages written by the Go producer (go), for profiling
// and to compare the two in one run:
//
//	go test -run '^$' -bench DrainPythonWrittenGo -benchtime 3x -cpuprofile cpu.out ./celerycompat/
func BenchmarkDrainPythonWrittenGo(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	pyDump := pyWrittenQueue(b, drainTasks)
	goDump := goWrittenQueue(b, drainTasks)
	for _, c := range []struct {
		name string
		dump []byte
	}{{"python", pyDump}, {"go", goDump}} {
		b.Run(c.name, func(b *testing.B) {
			var sum float64
			for range b.N {
				sum += goPyWrittenRate(b, c.dump, drainTasks)
			}
			b.ReportMetric(sum/float64(b.N), "tasks/s")
		})
	}
}

// goWrittenQueue is pyWrittenQueue with the Go producer writing the same task and kwargs.
func goWrittenQueue(b *testing.B, n int) []byte {
	b.Helper()
	s := benchStack(b)
	var kwargs map[string]any
	if err := json.Unmarshal([]byte(pyWrittenKwargs), &kwargs); err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	for start := 0; start < n; start += batch {
		reqs := make([]cc.TaskRequest, min(batch, n-start))
		for i := range reqs {
			reqs[i] = cc.TaskRequest{Name: "cap.echo", Kwargs: kwargs}
		}
		if _, errs := s.producer.SendBatch(context.Background(), reqs); errs[0] != nil {
			b.Fatal(errs[0])
		}
	}
	dump, err := redis.Bytes(s.r.Do(0, "DUMP", "celery"), nil)
	if err != nil {
		b.Fatal(err)
	}
	return dump
}
