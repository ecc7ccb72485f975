package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/examples/internal/loadtest"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// rig is one test's Redis, ports and shared settings; its methods start the services as
// separate processes, Go or Python, on those ports.
type rig struct {
	t               testing.TB
	redis           *redisServer
	amqp            *celerytest.VHost // nil: Redis is the broker; else tasks go through this RabbitMQ vhost
	dir             string
	apiPort         int
	recvPort        int
	taskSleep       string // TASK_SLEEP
	workerEnv       []string
	loadConcurrency int // submissions in flight (loadtest.Config.Concurrency); 0: all at once
}

func newRig(t testing.TB) *rig {
	t.Helper()
	return &rig{t: t, redis: startRedis(t), dir: t.TempDir(), apiPort: freePort(t), recvPort: freePort(t), taskSleep: "0"}
}

func (r *rig) apiURL() string      { return fmt.Sprintf("http://127.0.0.1:%d", r.apiPort) }
func (r *rig) receiverURL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.recvPort) }

// env is what every service of the rig shares.
func (r *rig) env(extra ...string) []string {
	var broker []string
	if r.amqp != nil {
		// Tasks through RabbitMQ; results, id mappings and the callback outbox on the Redis.
		broker = []string{"CELERY_BROKER_URL=" + r.amqp.URL(), "RESULT_URL=" + r.redis.URL(0)}
	}
	return environ(append(append(broker,
		"REDIS_URL="+r.redis.URL(0),
		"CALLBACK_URL="+r.receiverURL()+"/receive-task-result",
		"TASK_SLEEP="+r.taskSleep,
		"CONCURRENCY=1",
		"SHUTDOWN_TIMEOUT=10",
	), extra...)...)
}

// goReceiver starts examples/callback_receiver with its SQLite store in the test's directory (the
// same file across restarts).
func (r *rig) goReceiver() *proc {
	r.t.Helper()
	p := startProc(r.t, "go-receiver", r.dir, r.env(fmt.Sprintf("PORT=%d", r.recvPort),
		"CALLBACK_DB="+filepath.Join(r.dir, "callbacks.db")), bin(r.t, "callback_receiver"))
	p.waitHTTP(r.receiverURL()+"/healthz", 20*time.Second)
	return p
}

// goAPI starts examples/main_api.
func (r *rig) goAPI() *proc {
	r.t.Helper()
	p := startProc(r.t, "go-api", r.dir, r.env(fmt.Sprintf("PORT=%d", r.apiPort)), bin(r.t, "main_api"))
	p.waitHTTP(r.apiURL()+"/healthz", 20*time.Second)
	return p
}

// goWorker starts examples/worker.
func (r *rig) goWorker(name string, extra ...string) *proc {
	r.t.Helper()
	p := startProc(r.t, name, r.dir, r.env(append(r.workerEnv, extra...)...), bin(r.t, "worker"))
	p.waitLog("worker started", 20*time.Second)
	return p
}

// pyAPI starts the original main_api.py under uvicorn, one process.
func (r *rig) pyAPI() *proc {
	r.t.Helper()
	return r.pyUvicorn("py-api", "main_api:app", r.apiPort)
}

// pyReceiver starts the original callback_receiver.py under uvicorn; its log is the only record.
func (r *rig) pyReceiver() *proc {
	r.t.Helper()
	return r.pyUvicorn("py-receiver", "callback_receiver:app", r.recvPort)
}

// pyUvicorn serves app (module:attribute in examples/python) on port and waits for its /docs.
func (r *rig) pyUvicorn(name, app string, port int) *proc {
	r.t.Helper()
	p := startProc(r.t, name, pythonDir(r.t), r.env(), filepath.Join(venv(r.t), "bin", "python"), "-m", "uvicorn",
		app, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--log-level", "warning")
	p.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/docs", port), 60*time.Second)
	return p
}

// pyWorker starts the original tasks.py worker (celery -A tasks.celery_app worker -c 1, the solo
// pool) with node name name@%h.
func (r *rig) pyWorker(name string) *proc {
	r.t.Helper()
	v := venv(r.t)
	p := startProc(r.t, name, pythonDir(r.t), r.env(), filepath.Join(v, "bin", "python"), "-m", "celery",
		"-A", "tasks.celery_app", "worker", "--loglevel=info", "-c", "1", "-n", name+"@%h", "--without-mingle", "--without-gossip")
	p.waitLog(" ready.", 60*time.Second)
	return p
}

// load is a load test against the rig: callbacks counted by the Go receiver unless src says
// otherwise.
func (r *rig) load(n int, timeout time.Duration, src loadtest.Source) (*loadtest.Report, error) {
	r.t.Helper()
	return r.loadCtx(context.Background(), n, timeout, src)
}

// loadCtx is load, ended early (with a report of what arrived) when ctx is cancelled.
func (r *rig) loadCtx(ctx context.Context, n int, timeout time.Duration, src loadtest.Source) (*loadtest.Report, error) {
	r.t.Helper()
	if src == nil {
		src = &loadtest.ReceiverSource{URL: r.receiverURL()}
	}
	return loadtest.Run(ctx, loadtest.Config{
		APIURL:        r.apiURL(),
		N:             n,
		Concurrency:   r.loadConcurrency,
		Timeout:       timeout,
		Source:        src,
		RedisURL:      r.redis.URL(0),
		SubmittedFile: filepath.Join(r.dir, "submitted_tasks.txt"),
	})
}

// loadResult is the outcome of a load test run in the background.
type loadResult struct {
	rep *loadtest.Report
	err error
}

// loadInBackground starts a load test of n tasks (see load); its outcome arrives on the channel,
// while the test injects a fault.
func (r *rig) loadInBackground(n int, timeout time.Duration) <-chan loadResult {
	return r.loadInBackgroundCtx(context.Background(), n, timeout)
}

// loadInBackgroundCtx is loadInBackground, ended early when ctx is cancelled.
func (r *rig) loadInBackgroundCtx(ctx context.Context, n int, timeout time.Duration) <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		rep, err := r.loadCtx(ctx, n, timeout, nil)
		done <- loadResult{rep, err}
	}()
	return done
}

// outboxStats reads the worker's callback outbox (the default prefix, on db 0).
func (r *rig) outboxStats() callback.Stats {
	r.t.Helper()
	ob, err := callback.NewOutbox(r.redis.Pool(0), callback.OutboxConfig{})
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := ob.Stats(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// checkExact fails the test unless the report is consistent for n tasks.
func checkExact(t testing.TB, rep *loadtest.Report, err error, n int) {
	t.Helper()
	if rep == nil {
		t.Fatalf("load test did not run: %v", err)
	}
	if err != nil || !rep.Consistent() || rep.Submitted != n || rep.Submission.Failed != 0 || rep.Duplicates != 0 {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("want an exact report for %d tasks; err %v\n%s", n, err, b.String())
	}
	t.Logf("%d tasks: submitted in %.3f s; end to end %.3f s (%.0f tasks/s); latency p50 %v p95 %v p99 %v; suppressed duplicate deliveries %d",
		n, rep.Submission.Seconds, rep.EndToEnd.Seconds(), rep.TasksPerSecond, rep.LatencyP50, rep.LatencyP95, rep.LatencyP99, rep.Suppressed)
}
