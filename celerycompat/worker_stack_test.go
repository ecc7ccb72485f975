package celerycompat_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// wstack is a real redis-server with a broker, backend and producer on DB 0 / DB 1.
type wstack struct {
	t        testing.TB
	r        *celerytest.Redis
	pool     *redis.Pool
	rpool    *redis.Pool
	broker   *cc.Broker
	backend  *cc.Backend
	producer *cc.Producer
}

func newWStack(t *testing.T, bcfg cc.BrokerConfig) *wstack { return newWStackTB(t, bcfg) }

func newWStackTB(t testing.TB, bcfg cc.BrokerConfig) *wstack {
	t.Helper()
	r := celerytest.StartRedis(t)
	s := &wstack{t: t, r: r, pool: r.Pool(0), rpool: r.Pool(1)}
	var err error
	if s.broker, err = cc.NewBroker(s.pool, bcfg); err != nil {
		t.Fatal(err)
	}
	if s.backend, err = cc.NewBackend(s.rpool, cc.BackendConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.backend.Close() })
	if s.producer, err = cc.NewProducer(s.broker, cc.ProducerConfig{Backend: s.backend}); err != nil {
		t.Fatal(err)
	}
	return s
}

// runWorker starts w.Run in the background; the returned stop drains it and returns Run's error.
func runWorker(t *testing.T, w *cc.Worker) (stop func() error) { return runWorkerTB(t, w) }

func runWorkerTB(t testing.TB, w *cc.Worker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				err = errors.New("worker did not stop within 30s")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (s *wstack) newWorker(cfg cc.WorkerConfig) *cc.Worker { return s.newWorkerTB(s.t, cfg) }

func (s *wstack) newWorkerTB(t testing.TB, cfg cc.WorkerConfig) *cc.Worker {
	t.Helper()
	if cfg.Backend == nil {
		cfg.Backend = s.backend
	}
	w, err := cc.NewWorker(s.broker, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (s *wstack) send(name string, args []any, kwargs map[string]any, opts ...cc.SendOption) *cc.AsyncResult {
	s.t.Helper()
	res, err := s.producer.Send(context.Background(), name, args, kwargs, opts...)
	if err != nil {
		s.t.Fatalf("send %s: %v", name, err)
	}
	return res
}

// wait waits for a ready result, failing the test after timeout.
func wait(t *testing.T, res *cc.AsyncResult, timeout time.Duration) (*cc.ResultMeta, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	meta, err := res.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("result %s not ready after %v", res.ID, timeout)
	}
	if err == nil && meta.Status.Propagates() {
		te, ok := meta.Result.(*cc.TaskError)
		if !ok {
			t.Fatalf("result %s: %s with result %T, want *TaskError", res.ID, meta.Status, meta.Result)
		}
		return meta, te
	}
	return meta, err
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *wstack) llen(key string) int {
	n, err := redis.Int(s.r.Do(0, "LLEN", key), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *wstack) llenDB(db int, key string) int {
	n, err := redis.Int(s.r.Do(db, "LLEN", key), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *wstack) hlen(key string) int {
	n, err := redis.Int(s.r.Do(0, "HLEN", key), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

func num(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case float64:
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	}
	return -1
}

// addHandler sums numeric args.
var addHandler = cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
	var sum float64
	for _, a := range req.Args {
		sum += num(a)
	}
	return sum, nil
})

// checkNoLeak fails if goroutines started by the test outlive it (beyond a small allowance for
// the pool's and the runtime's).
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before, %d after the worker stopped\n%s", before, n, firstLines(string(buf), 80))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
