package celerycompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// recordHandler appends {"id", "worker"} to the list cap:ran in the result DB, so a test can see
// every run of every task (Python's cap.record does the same).
func recordHandler(pool *redis.Pool, hostname string) cc.Handler {
	return cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		c, err := pool.GetContext(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		rec, _ := json.Marshal(map[string]any{"id": req.ID, "worker": hostname, "args": req.Args})
		if _, err := c.Do("RPUSH", "cap:ran", rec); err != nil {
			return nil, fmt.Errorf("%w: record: %w", cc.ErrBroker, err)
		}
		return req.Args, nil
	})
}

// TestHelperWorkerProcess is not a test: it is the Go worker process the crash tests start and
// SIGKILL (re-executing the test binary), configured by environment variables.
func TestHelperWorkerProcess(t *testing.T) {
	addr := os.Getenv("CB_HELPER_REDIS")
	if addr == "" {
		t.Skip("not a test: the crash tests (also in CI) start it as a child process")
	}
	vt, _ := time.ParseDuration(os.Getenv("CB_HELPER_VT"))
	conc, _ := strconv.Atoi(os.Getenv("CB_HELPER_CONCURRENCY"))
	dial := func(db int) *redis.Pool {
		return &redis.Pool{MaxIdle: 8, Dial: func() (redis.Conn, error) { return redis.Dial("tcp", addr, redis.DialDatabase(db)) }}
	}
	broker, err := cc.NewBroker(dial(0), cc.BrokerConfig{VisibilityTimeout: vt})
	if err != nil {
		t.Fatal(err)
	}
	backend, err := cc.NewBackend(dial(1), cc.BackendConfig{})
	if err != nil {
		t.Fatal(err)
	}
	host := "go-crash-" + strconv.Itoa(os.Getpid())
	w, err := cc.NewWorker(broker, cc.WorkerConfig{Hostname: host, Backend: backend, Concurrency: conc, PrefetchMultiplier: 2, RestoreInterval: vt / 4})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Register("cap.record", recordHandler(dial(1), host))
	_ = w.Run(context.Background()) // until SIGKILL
}

func startHelperWorker(t *testing.T, s *wstack, vt time.Duration, concurrency int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CB_HELPER_REDIS="+s.r.Addr(), "CB_HELPER_VT="+vt.String(),
		"CB_HELPER_CONCURRENCY="+strconv.Itoa(concurrency))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// ranCounts reads cap:ran and counts runs per task id.
func ranCounts(t *testing.T, s *wstack) map[string]int {
	t.Helper()
	raws, err := redis.ByteSlices(s.r.Do(1, "LRANGE", "cap:ran", 0, -1), nil)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range raws {
		var rec struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r, &rec); err != nil {
			t.Fatalf("bad record %q: %v", r, err)
		}
		counts[rec.ID]++
	}
	return counts
}

// TestWorkerSurvivesSIGKILL kills Go worker processes with SIGKILL at random moments of a
// 1000-task run, over and over, then lets a survivor finish: every task must run, and the test
// reports how many ran twice (the price of at-least-once delivery).
func TestWorkerSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash test takes ~20 s")
	}
	const n = 1000
	const vt = 2 * time.Second
	s := newWStack(t, cc.BrokerConfig{VisibilityTimeout: vt})
	reqs := make([]cc.TaskRequest, n)
	ids := make([]string, n)
	for i := range reqs {
		ids[i] = fmt.Sprintf("crash-%04d", i)
		reqs[i] = cc.TaskRequest{Name: "cap.record", Args: []any{i}, Options: []cc.SendOption{cc.WithTaskID(ids[i])}}
	}
	if _, errs := s.producer.SendBatch(context.Background(), reqs); errs[0] != nil {
		t.Fatal(errs[0])
	}
	kills := killWorkersRepeatedly(t, s, vt, 8)
	t.Logf("killed workers had run %d distinct tasks", len(ranCounts(t, s)))
	// The survivor: an in-process worker with the same visibility timeout.
	w := s.newWorker(cc.WorkerConfig{Hostname: "survivor", Concurrency: 4, RestoreInterval: 500 * time.Millisecond})
	_ = w.Register("cap.record", recordHandler(s.rpool, "survivor"))
	runWorker(t, w)
	eventually(t, 60*time.Second, "all tasks run", func() bool { return len(ranCounts(t, s)) == n })
	for _, id := range ids {
		meta, err := wait(t, s.backend.AsyncResult(id), 10*time.Second)
		if err != nil || meta.Status != cc.StateSuccess {
			t.Fatalf("task %s: %v %v", id, meta, err)
		}
	}
	eventually(t, 10*time.Second, "nothing left un-acked", func() bool {
		return s.hlen("unacked") == 0 && s.llen("celery") == 0
	})
	dups := 0
	for _, c := range ranCounts(t, s) {
		dups += c - 1
	}
	t.Logf("%d tasks, %d SIGKILLs: none lost, %d ran twice", n, kills, dups)
}

// killWorkersRepeatedly starts Go worker processes one after another and SIGKILLs each at a
// random moment after it has run a random number of tasks (so kills land mid-fetch, mid-run,
// mid-store and mid-ack). It returns the number of kills.
func killWorkersRepeatedly(t *testing.T, s *wstack, vt time.Duration, rounds int) int {
	t.Helper()
	kills := 0
	for range rounds {
		base := s.llenDB(1, "cap:ran")
		cmd := startHelperWorker(t, s, vt, 4)
		target := base + 20 + rand.IntN(100)
		deadline := time.Now().Add(10 * time.Second)
		for s.llenDB(1, "cap:ran") < target && time.Now().Before(deadline) {
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		kills++
	}
	return kills
}

// TestWorkerReconnectsAfterRedisRestart restarts redis-server in the middle of a run (losing its
// data, as a restart without persistence does): the worker must reconnect by itself and serve the
// tasks sent after the restart.
func TestWorkerReconnectsAfterRedisRestart(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Concurrency: 2})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	if _, err := wait(t, s.send("cap.add", []any{1}, nil), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	s.r.Stop()
	time.Sleep(300 * time.Millisecond) // the worker sees the outage
	s.r.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var res []*cc.AsyncResult
	for i := range 20 {
		r, err := s.producer.Send(ctx, "cap.add", []any{i, 1}, nil)
		if err != nil {
			t.Fatalf("send after restart: %v", err)
		}
		res = append(res, r)
	}
	for i, r := range res {
		meta, err := wait(t, r, 20*time.Second)
		if err != nil || num(meta.Result) != float64(i+1) {
			t.Fatalf("task %d after restart: %v %v", i, meta, err)
		}
	}
}
