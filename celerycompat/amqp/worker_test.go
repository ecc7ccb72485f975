package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestGoWorkerPythonProducer is the end-to-end run over RabbitMQ: Python Celery (5.7.0 and 5.2.6)
// sends tasks, one of them with a countdown (held un-acked with the prefetch raised) and one with
// a priority; celerycompat.NewWorker on this transport runs them with a Redis result backend; and
// Python's AsyncResult.get() sees every result. A poison message on the same queue goes to the
// dead-letter queue while the worker keeps serving.
func TestGoWorkerPythonProducer(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{})
			rd := celerytest.StartRedis(t)
			backend, err := celerycompat.NewBackend(rd.Pool(1), celerycompat.BackendConfig{})
			if err != nil {
				t.Fatal(err)
			}
			w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{
				Hostname: "go@amqp", Concurrency: 2, Backend: backend,
			})
			if err != nil {
				t.Fatal(err)
			}
			add := func(_ context.Context, req *celerycompat.Request) (any, error) {
				var sum float64
				for _, a := range req.Args {
					n, err := a.(json.Number).Float64()
					if err != nil {
						return nil, err
					}
					sum += n
				}
				return sum, nil
			}
			if err := w.Register("cap.add", celerycompat.HandlerFunc(add)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			runErr := make(chan error, 1)
			go func() { runErr <- w.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				select {
				case err := <-runErr:
					if err != nil && !errors.Is(err, context.Canceled) {
						t.Errorf("Run: %v", err)
					}
				case <-time.After(30 * time.Second):
					t.Error("worker did not stop within 30 s")
				}
			})

			rawPublish(t, v, "celery", amqp091.Publishing{ContentType: "application/x-python-serialize",
				Headers: amqp091.Table{"task": "cap.add", "id": "poison-1"}, Body: []byte("\x80\x04K\x01.")})
			spec := []map[string]any{
				{"name": "cap.add", "args": []any{2, 3}},
				{"name": "cap.add", "args": []any{10, 20}, "countdown": 2},
				{"name": "cap.add", "args": []any{1, 1}, "priority": 7},
			}
			env := []string{"BACKEND_URL=" + rd.URL(1)}
			s := pySend(t, peer, v.URL(), env, spec)
			args := append([]string{"--timeout", "30"}, s.IDs...)
			out := celerytest.RunPython(t, peer, append([]string{"BROKER_URL=" + v.URL()}, env...), 60*time.Second, "get_result.py", args...)
			var res struct {
				Results []struct {
					ID     string `json:"id"`
					State  string `json:"state"`
					Result any    `json:"result"`
				} `json:"results"`
			}
			if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != len(spec) {
				t.Fatalf("get_result.py: %v\n%s", err, out)
			}
			for i, want := range []float64{5, 30, 2} {
				r := res.Results[i]
				if r.State != "SUCCESS" || fmt.Sprint(r.Result) != fmt.Sprint(want) {
					t.Errorf("task %d (%s): %s %v, want SUCCESS %v", i, r.ID, r.State, r.Result, want)
				}
			}
			qs := waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
				return qs["celery"].Ready+qs["celery"].Unacked == 0 && qs["celerybridge.deadletter"].Ready == 1
			})
			if qs["celerybridge.deadletter"].Ready != 1 {
				t.Fatalf("dead-letter queue: %+v", qs)
			}
			dl := getOne(t, v, "celerybridge.deadletter")
			if dl.Headers["id"] != "poison-1" || dl.Headers["x-deadletter-reason"] == "" {
				t.Errorf("dead letter headers %v", dl.Headers)
			}
		})
	}
}
