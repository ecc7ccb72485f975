package amqp

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// sent is send.py's output.
type sent struct {
	IDs           []string `json:"ids"`
	CeleryVersion string   `json:"celery_version"`
}

func pySend(t *testing.T, peer celerytest.Peer, brokerURL string, env []string, spec any) sent {
	t.Helper()
	b, _ := json.Marshal(spec)
	env = append([]string{"BROKER_URL=" + brokerURL, "BACKEND_URL=disabled://"}, env...)
	out := celerytest.RunPython(t, peer, env, 60*time.Second, "send.py", "--spec", string(b))
	var s sent
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("send.py output: %v\n%s", err, out)
	}
	return s
}

// TestPythonProducer: what Python Celery's send_task/apply_async writes to RabbitMQ (protocol 2
// and 1, countdown, priority, custom headers) decodes to the task Python sent.
func TestPythonProducer(t *testing.T) {
	for _, peer := range celerytest.Peers {
		for _, proto := range []int{2, 1} {
			t.Run(fmt.Sprintf("%s/protocol%d", peer, proto), func(t *testing.T) {
				tr, v := newTransport(t, Config{})
				spec := []map[string]any{
					{"name": "cap.echo", "args": []any{2, 3}, "kwargs": map[string]any{"z": 1}, "countdown": 30, "priority": 5},
					{"name": "cap.echo", "args": []any{"x", 1.5, nil}, "headers": map[string]any{"trace": "abc", "n": 7}},
					{"name": "cap.add", "args": []any{1, 1}, "queue": "other"},
				}
				before := time.Now()
				s := pySend(t, peer, v.URL(), []string{fmt.Sprintf("CAP_TASK_PROTOCOL=%d", proto)}, spec)
				c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery", "other"}, Prefetch: 10})
				got := map[string]*celerycompat.Message{}
				for _, d := range next(t, c, 3, 20*time.Second) {
					if d.DecodeErr != nil {
						t.Fatalf("DecodeErr: %v\nraw %s", d.DecodeErr, d.Raw)
					}
					got[d.Message.ID] = d.Message
					if err := c.Ack(testCtx(t), d); err != nil {
						t.Fatal(err)
					}
				}
				for i, id := range s.IDs {
					m := got[id]
					if m == nil {
						t.Fatalf("task %d (%s) not consumed", i, id)
					}
					if m.Protocol != proto || m.Task != spec[i]["name"] {
						t.Errorf("task %d: protocol %d task %q", i, m.Protocol, m.Task)
					}
					if diff := cmp.Diff(jsonish(spec[i]["args"]), jsonish(m.Args)); diff != "" {
						t.Errorf("task %d args (-want +got):\n%s", i, diff)
					}
					if m.CorrelationID != id || m.DeliveryMode != 2 {
						t.Errorf("task %d: correlation_id %q delivery_mode %d", i, m.CorrelationID, m.DeliveryMode)
					}
				}
				m0 := got[s.IDs[0]]
				if diff := cmp.Diff(jsonish(map[string]any{"z": 1}), jsonish(m0.Kwargs)); diff != "" {
					t.Errorf("kwargs (-want +got):\n%s", diff)
				}
				if m0.ETA == nil || m0.ETA.Sub(before) < 25*time.Second || m0.ETA.Sub(before) > 40*time.Second {
					t.Errorf("countdown 30: eta %v (sent at %v)", m0.ETA, before)
				}
				if m0.Priority != 5 {
					t.Errorf("priority %d, want 5", m0.Priority)
				}
				if proto == 2 {
					if h := string(got[s.IDs[1]].ExtraHeaders["trace"]); h != `"abc"` {
						t.Errorf("custom header trace = %s; extra headers %v", h, got[s.IDs[1]].ExtraHeaders)
					}
				}
			})
		}
	}
}

// TestGoProducerPythonWorker: a task Go publishes runs on a real Python worker consuming from
// RabbitMQ, which stores the result in Redis.
func TestGoProducerPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{})
			rd := celerytest.StartRedis(t)
			w := celerytest.StartPyWorker(t, peer, v.URL(), rd.URL(1), nil)
			m := taskMsg("celery", 20, 22)
			m.Task, m.Kwargs = "cap.add", nil
			publish(t, tr, m)
			out := celerytest.RunPython(t, peer, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=" + rd.URL(1)},
				60*time.Second, "get_result.py", "--timeout", "30", m.ID)
			var res struct {
				Results []struct {
					State  string `json:"state"`
					Result any    `json:"result"`
				} `json:"results"`
			}
			if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != 1 {
				t.Fatalf("get_result.py: %v\n%s", err, out)
			}
			if r := res.Results[0]; r.State != "SUCCESS" || jsonish(r.Result) != jsonish(42) {
				t.Fatalf("result %+v, want SUCCESS 42\nworker log:\n%s", r, w.Log())
			}
		})
	}
}

// TestProducerPythonWorker: celerycompat.NewProducer on this transport (countdown, priority,
// protocol 1 and 2) feeds a real Python worker on RabbitMQ; the results land in Redis.
func TestProducerPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		for _, proto := range []int{2, 1} {
			t.Run(fmt.Sprintf("%s/protocol%d", peer, proto), func(t *testing.T) {
				tr, v := newTransport(t, Config{})
				rd := celerytest.StartRedis(t)
				w := celerytest.StartPyWorker(t, peer, v.URL(), rd.URL(1), nil)
				p, err := celerycompat.NewProducer(tr, celerycompat.ProducerConfig{Protocol: proto})
				if err != nil {
					t.Fatal(err)
				}
				ctx := testCtx(t)
				r1, err := p.Send(ctx, "cap.add", []any{20, 22}, nil)
				if err != nil {
					t.Fatal(err)
				}
				r2, err := p.Send(ctx, "cap.add", []any{1, 2}, nil, celerycompat.WithCountdown(time.Second), celerycompat.WithPriority(3))
				if err != nil {
					t.Fatal(err)
				}
				out := celerytest.RunPython(t, peer, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=" + rd.URL(1)},
					60*time.Second, "get_result.py", "--timeout", "30", r1.ID, r2.ID)
				var res struct {
					Results []struct {
						State  string `json:"state"`
						Result any    `json:"result"`
					} `json:"results"`
				}
				if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != 2 {
					t.Fatalf("get_result.py: %v\n%s", err, out)
				}
				for i, want := range []float64{42, 3} {
					if r := res.Results[i]; r.State != "SUCCESS" || r.Result != want {
						t.Errorf("task %d: %+v, want SUCCESS %v\nworker log:\n%s", i, r, want, w.Log())
					}
				}
			})
		}
	}
}
