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

// TestAMQPGoClientPythonWorker is gocelery's client example on RabbitMQ against a real Python
// worker consuming from the same vhost, results in Redis: Delay, DelayKwargs, protocol 1, and a
// Python exception arriving as an error. The Python worker declares the queue first, so a Go
// declaration that differed from Celery's would fail with PRECONDITION_FAILED.
func TestAMQPGoClientPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := amqpVHost(t)
			r := celerytest.StartRedis(t)
			w := celerytest.StartPyWorker(t, peer, v.URL(), r.URL(0), nil)
			backend := gocelery.NewRedisBackend(r.Pool(0))
			t.Cleanup(func() { backend.Close() })
			broker := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
			cli, err := gocelery.NewCeleryClient(broker, backend, 1)
			if err != nil {
				t.Fatal(err)
			}

			ar, err := cli.Delay("cap.add", 5456, 2878)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(8334) {
				t.Fatalf("Delay: Get = %v (%T), %v; want float64 8334\nworker log:\n%s", res, res, err, w.Log())
			}
			ar, err = cli.DelayKwargs("cap.add", map[string]interface{}{"x": 2, "y": 3})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(5) {
				t.Errorf("DelayKwargs: Get = %v, %v; want 5", res, err)
			}

			v1 := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { v1.CloseEngine(); v1.Connection.Close() })
			v1.Protocol = 1
			cli1, err := gocelery.NewCeleryClient(v1, backend, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ar, err = cli1.Delay("cap.add", 20, 22); err != nil {
				t.Fatal(err)
			}
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(42) {
				t.Errorf("protocol 1: Get = %v, %v; want 42", res, err)
			}

			if ar, err = cli.Delay("cap.fail"); err != nil {
				t.Fatal(err)
			}
			_, err = ar.Get(30 * time.Second)
			var te *celerycompat.TaskError
			if !errors.Is(err, gocelery.ErrTaskFailed) || !errors.As(err, &te) || te.ExcType != "MyError" {
				t.Errorf("cap.fail: Get error %v, want ErrTaskFailed with MyError", err)
			}

			// Celery's topology only: exchange "celery", no gocelery "default" exchange.
			exchanges := map[string]bool{}
			for _, row := range v.List(t, "list_exchanges", "name", "durable", "auto_delete") {
				exchanges[fmt.Sprint(row["name"])] = true
				if row["name"] == "celery" && (row["durable"] != true || row["auto_delete"] != false) {
					t.Errorf("exchange celery: %v", row)
				}
			}
			if !exchanges["celery"] || exchanges["default"] {
				t.Errorf("exchanges %v: want celery, not default", exchanges)
			}
		})
	}
}

// TestAMQPPythonClientGoWorker is gocelery's worker example on RabbitMQ served to a real Python
// producer: positional and kwargs tasks, protocol 1, a countdown, a failure, all read back by
// Python's AsyncResult.get() from Redis.
func TestAMQPPythonClientGoWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := amqpVHost(t)
			r := celerytest.StartRedis(t)
			backend := &gocelery.RedisCeleryBackend{Pool: r.Pool(0)}
			t.Cleanup(func() { backend.Close() })
			broker := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
			cli, err := gocelery.NewCeleryClient(broker, backend, 4)
			if err != nil {
				t.Fatal(err)
			}
			cli.Register("worker.add", func(a, b int) int { return a + b })
			cli.Register("worker.add_reflect", &addTask{})
			cli.Register("worker.fail", func() (int, error) { return 0, errors.New("boom") })
			cli.StartWorker()
			defer cli.StopWorker()

			env := []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=" + r.URL(0)}
			ids := pySendEnv(t, peer, env, []map[string]any{
				{"name": "worker.add", "args": []any{5456, 2878}},
				{"name": "worker.add_reflect", "kwargs": map[string]any{"a": 5456, "b": 2878}},
				{"name": "worker.fail"},
				{"name": "worker.add", "args": []any{1, 1}, "countdown": 2},
				{"name": "worker.add", "args": []any{20, 22}, "protocol": 1},
			})
			got := pyGetEnv(t, peer, env, 20*time.Second, ids...)
			for i, want := range []any{8334.0, 8334.0, nil, 2.0, 42.0} {
				g := got[ids[i]]
				if want == nil {
					if g.State != "FAILURE" || g.Exc == nil || g.Exc.Type != "GoError" {
						t.Errorf("worker.fail: Python saw %+v, want FAILURE GoError", g)
					}
					continue
				}
				if g.State != "SUCCESS" || g.Result != want {
					t.Errorf("task %d (%s): Python get() saw %s %v, want SUCCESS %v", i, ids[i], g.State, g.Result, want)
				}
			}
			qs := waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
				return qs["celery"].Ready+qs["celery"].Unacked == 0
			})
			if n := qs["celerybridge.deadletter"].Ready; n != 0 {
				t.Errorf("%d messages dead-lettered", n)
			}
		})
	}
}

// TestAMQPTopologyMatchesPython: a Go client declares first, then a Python worker of each
// version starts on the same vhost and consumes the queue, which it could not do (406
// PRECONDITION_FAILED on its own declaration) if Go had declared the queue or exchange with
// gocelery's flags.
func TestAMQPTopologyMatchesPython(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := amqpVHost(t)
			r := celerytest.StartRedis(t)
			broker := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
			if err := broker.CreateExchange(); err != nil {
				t.Fatal(err)
			}
			if err := broker.CreateQueue(); err != nil {
				t.Fatal(err)
			}
			backend := gocelery.NewRedisBackend(r.Pool(0))
			t.Cleanup(func() { backend.Close() })
			cli, err := gocelery.NewCeleryClient(broker, backend, 1)
			if err != nil {
				t.Fatal(err)
			}
			ar, err := cli.Delay("cap.add", 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			w := celerytest.StartPyWorker(t, peer, v.URL(), r.URL(0), nil)
			if res, err := ar.Get(30 * time.Second); err != nil || res != float64(3) {
				t.Fatalf("Get = %v, %v; want 3\nworker log:\n%s", res, err, w.Log())
			}
			if log := w.Log(); strings.Contains(log, "PRECONDITION_FAILED") {
				t.Errorf("Python worker log has PRECONDITION_FAILED:\n%s", log)
			}
		})
	}
}
