//go:build unix

package callback

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// countingStore signals when a number of callbacks have been stored.
type countingStore struct {
	Store
	target int64
	n      atomic.Int64
	done   chan struct{}
}

func (c *countingStore) Save(ctx context.Context, cb Callback) (bool, error) {
	ins, err := c.Store.Save(ctx, cb)
	if err == nil && ins && c.n.Add(1) == c.target {
		close(c.done)
	}
	return ins, err
}

// benchConcurrency is the dispatcher's Concurrency in BenchmarkDelivery.
const benchConcurrency = 128

// BenchDelivery is benchDelivery for the external test package, which runs it against the
// SQLite store (package callback's own tests cannot import a store package that imports it).
var BenchDelivery = benchDelivery

// benchDelivery measures callbacks delivered per second from a full outbox (real
// redis-server with appendonly yes, appendfsync everysec) by a dispatcher in its own process
// (as in a worker process: the test binary re-executed, default settings, Concurrency
// benchConcurrency) to the Go receiver in this process (signed requests, storing in store)
// over loopback. Against the same receiver and store it then measures the
// original rig's pattern: one sequential requests.post(url, json=payload, timeout=10) per
// callback in Python (testdata/python_pattern.py, timed inside Python, so interpreter start-up
// is not counted against it). Reports callbacks/s, py_callbacks/s and their ratio x_python, and
// the CPU both Go processes spent per callback.
//
// BenchmarkDelivery (bench_sqlite_test.go) runs it with the SQLite store, as the example
// receiver stores.
func benchDelivery(b *testing.B, store Store) {
	ctx := context.Background()
	r, pool := startRedis(b)
	r.Do(0, "CONFIG", "SET", "appendonly", "yes")
	r.Do(0, "CONFIG", "SET", "appendfsync", "everysec")

	py := ""
	if p, err := benchPython(b); err == nil {
		py = p
	} else if celerytest.InCI() {
		b.Fatalf("CI=true and the Python side of the benchmark cannot run: %v", err)
	} else {
		b.Logf("skipping the Python comparison: %v", err)
	}
	pyCount := min(max(b.N/10, 200), 1000)

	counting := &countingStore{Store: store, target: int64(b.N), done: make(chan struct{})}
	signed, err := NewHandler(HandlerConfig{Store: counting, Secret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	plain, err := NewHandler(HandlerConfig{Store: counting}) // the Python pattern does not sign
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/signed", signed)
	mux.Handle("/plain", plain)
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	ob := newTestOutbox(b, pool, srv.URL+"/signed")
	evs := events(fmt.Sprint("bench-", b.N), b.N)
	start := time.Now()
	enqueueAll(b, ob, evs)
	enqueueRate := float64(b.N) / time.Since(start).Seconds()

	redisCPU := func() float64 {
		info, _ := redis.String(r.Do(0, "INFO", "cpu"), nil)
		var total float64
		for _, line := range strings.Split(info, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
		return total
	}
	cpuNow := func(who int) time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	self0, children0 := cpuNow(syscall.RUSAGE_SELF), cpuNow(syscall.RUSAGE_CHILDREN)

	b.ResetTimer()
	helper, out := startHelperRole(b, "bench-dispatcher", r.Addr(), srv.URL+"/signed")
	for !strings.Contains(out.String(), "dispatcher running") {
		if helper.ProcessState != nil || time.Since(start) > time.Minute {
			b.Fatalf("dispatcher process did not start: %s", out.String())
		}
		time.Sleep(time.Millisecond)
	}
	redis0 := redisCPU()
	start = time.Now()
	select {
	case <-counting.done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("only %d of %d callbacks stored; dispatcher said: %s", counting.n.Load(), b.N, out.String())
	}
	for {
		st, err := ob.Stats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.Pending == 0 && st.InFlight == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	redis1 := redisCPU()
	if err := helper.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := helper.Wait(); err != nil {
		b.Fatalf("dispatcher process: %v: %s", err, out.String())
	}
	goRate := float64(b.N) / elapsed.Seconds()
	// CPU of both processes (dispatcher with its HTTP client; receiver with its store) per
	// callback, including the dispatcher's start-up: less sensitive than the rates to other
	// load on the machine.
	cpu := cpuNow(syscall.RUSAGE_SELF) - self0 + cpuNow(syscall.RUSAGE_CHILDREN) - children0
	b.ReportMetric(goRate, "callbacks/s")
	b.ReportMetric(enqueueRate, "enqueues/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/callback")
	b.ReportMetric((redis1-redis0)*1e6/float64(b.N), "redis-cpu-µs/callback")
	if py == "" {
		return
	}

	pyOut, err := exec.Command(py, "testdata/python_pattern.py", srv.URL+"/plain", fmt.Sprint(pyCount), fmt.Sprint("py-", b.N)).CombinedOutput()
	if err != nil {
		b.Fatalf("python_pattern.py: %v\n%s", err, pyOut)
	}
	var res struct {
		OK      int     `json:"ok"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal(pyOut, &res); err != nil || res.OK != pyCount || res.Seconds <= 0 {
		b.Fatalf("python_pattern.py said %s (%v)", pyOut, err)
	}
	pyRate := float64(res.OK) / res.Seconds
	b.ReportMetric(pyRate, "py_callbacks/s")
	b.ReportMetric(goRate/pyRate, "x_python")
	if st, _ := store.Stats(ctx); st.Unique != int64(b.N+pyCount) {
		b.Errorf("store has %d callbacks, want %d", st.Unique, b.N+pyCount)
	}
}

// benchPython is venvPython without skipping: the benchmark's Go half runs without Python.
// It resolves the interpreter as celerytest.Python does for celerytest.CeleryNew.
func benchPython(b *testing.B) (string, error) {
	venv := os.Getenv("CELERYBRIDGE_VENV")
	if venv == "" {
		venv = filepath.Join(celerytest.RepoRoot(b), ".venv")
	}
	py := filepath.Join(venv, "bin", "python")
	if out, err := exec.Command(py, "-c", "import requests").CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s cannot import requests: %v: %s", py, err, out)
	}
	return py, nil
}
