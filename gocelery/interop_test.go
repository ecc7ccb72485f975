package gocelery_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// addTask is a kwargs task written the way gocelery documents CeleryTask: ParseKwargs asserts
// float64, as encoding/json decodes numbers.
type addTask struct{ a, b int }

func (t *addTask) ParseKwargs(kw map[string]interface{}) error {
	a, ok := kw["a"].(float64)
	if !ok {
		return fmt.Errorf("kwarg a: %T", kw["a"])
	}
	b, ok := kw["b"].(float64)
	if !ok {
		return fmt.Errorf("kwarg b: %T", kw["b"])
	}
	t.a, t.b = int(a), int(b)
	return nil
}

func (t *addTask) RunTask() (interface{}, error) { return t.a + t.b, nil }

// TestGoClientPythonWorker is gocelery's client example against a real Python worker: Delay and
// DelayKwargs, Get with a timeout, Ready and AsyncGet, protocol 2 and protocol 1, and a Python
// exception arriving as an error with its traceback.
func TestGoClientPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			r := celerytest.StartRedis(t)
			celerytest.StartPyWorker(t, peer, r.URL(0), r.URL(0), nil,
				"--", "--without-mingle", "--without-gossip", "--without-heartbeat")
			pool := r.Pool(0)
			backend := &gocelery.RedisCeleryBackend{Pool: pool}
			t.Cleanup(func() { backend.Close() })
			cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), backend, 1)
			if err != nil {
				t.Fatal(err)
			}

			ar, err := cli.Delay("cap.add", 5456, 2878)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(8334) {
				t.Fatalf("Delay: Get = %v (%T), %v; want float64 8334", res, res, err)
			}
			if ok, err := ar.Ready(); !ok || err != nil {
				t.Errorf("Ready after Get = %v, %v", ok, err)
			}
			if res, err := ar.AsyncGet(); err != nil || res != float64(8334) {
				t.Errorf("AsyncGet after Get = %v, %v", res, err)
			}

			ar, err = cli.DelayKwargs("cap.add", map[string]interface{}{"x": 2, "y": 3})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(5) {
				t.Errorf("DelayKwargs: Get = %v, %v; want 5", res, err)
			}

			v1 := gocelery.NewRedisBroker(pool)
			v1.Protocol = 1
			cli1, err := gocelery.NewCeleryClient(v1, backend, 1)
			if err != nil {
				t.Fatal(err)
			}
			ar, err = cli1.Delay("cap.add", 20, 22)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(42) {
				t.Errorf("protocol 1: Get = %v, %v; want 42", res, err)
			}

			ar, err = cli.Delay("cap.fail")
			if err != nil {
				t.Fatal(err)
			}
			_, err = ar.Get(30 * time.Second)
			var te *celerycompat.TaskError
			if !errors.Is(err, gocelery.ErrTaskFailed) || !errors.As(err, &te) || te.ExcType != "MyError" ||
				!strings.Contains(te.Traceback, "MyError") {
				t.Errorf("cap.fail: Get error %v (%+v), want ErrTaskFailed with MyError and its traceback", err, te)
			}
		})
	}
}

// TestPythonClientGoWorker is gocelery's worker examples served to a real Python client: a
// positional function task called by reflection with gocelery's number conversions, a
// CeleryTask with kwargs, protocol 1 messages, a countdown held until due, and failures that
// Python's get() raises.
func TestPythonClientGoWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			r := celerytest.StartRedis(t)
			pool := r.Pool(0)
			backend := &gocelery.RedisCeleryBackend{Pool: pool}
			t.Cleanup(func() { backend.Close() })
			cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), backend, 4)
			if err != nil {
				t.Fatal(err)
			}
			cli.Register("worker.add", func(a, b int) int { return a + b })
			cli.Register("worker.add_reflect", &addTask{})
			cli.Register("worker.scale", func(x float32, n int, label string, tags []interface{}) string {
				return fmt.Sprintf("%s:%g:%d", label, x*float32(n), len(tags))
			})
			cli.Register("worker.fail", func() (int, error) { return 0, errors.New("boom") })
			cli.StartWorker()
			defer cli.StopWorker()

			ids := pySend(t, peer, r, []map[string]any{
				{"name": "worker.add", "args": []any{5456, 2878}},
				{"name": "worker.add_reflect", "kwargs": map[string]any{"a": 5456, "b": 2878}, "expires": 120},
				{"name": "worker.scale", "args": []any{1.5, 2.9, "x", []any{1, "two"}}}, // 2.9 -> int 2, as gocelery
				{"name": "worker.fail"},
				{"name": "worker.add", "args": []any{1, 2, 3}},
			})
			start := time.Now()
			eta := pySend(t, peer, r, map[string]any{"name": "worker.add", "args": []any{1, 1}, "countdown": 4})
			sendTook := time.Since(start)
			if sendTook < 3*time.Second {
				if _, err := backend.GetResult(eta[0]); !errors.Is(err, gocelery.ErrResultNotAvailable) {
					t.Errorf("countdown 4 s task: GetResult %v after sending = %v, want ErrResultNotAvailable", sendTook, err)
				}
			}
			v1 := pySend(t, peer, r, map[string]any{"name": "worker.add", "args": []any{20, 22}, "protocol": 1})

			got := pyGet(t, peer, r, 20*time.Second, append(append(ids, eta...), v1...)...)
			want := []struct {
				id, state string
				result    any
			}{
				{ids[0], "SUCCESS", 8334.0},
				{ids[1], "SUCCESS", 8334.0},
				{ids[2], "SUCCESS", "x:3:2"},
				{eta[0], "SUCCESS", 2.0},
				{v1[0], "SUCCESS", 42.0},
			}
			for _, w := range want {
				if g := got[w.id]; g.State != w.state || g.Result != w.result {
					t.Errorf("%s: Python get() saw %s %v, want %s %v", w.id, g.State, g.Result, w.state, w.result)
				}
			}
			if g := got[ids[3]]; g.State != "FAILURE" || g.Exc == nil || g.Exc.Type != "GoError" || g.Traceback == "" {
				t.Errorf("error result: Python saw %+v, want FAILURE GoError with a traceback", g)
			}
			if g := got[ids[4]]; g.State != "FAILURE" || g.Exc == nil || g.Exc.Type != "TypeError" {
				t.Errorf("three args for two parameters: Python saw %+v, want FAILURE TypeError", g)
			}
		})
	}
}
