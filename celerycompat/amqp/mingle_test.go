package amqp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestMingleOverAMQP: mingle works on RabbitMQ, where the mailbox cannot be listed so a starting
// worker greets everyone and waits its second, as Celery does. A task id revoked on a running Go
// worker is learnt by a second Go worker starting later, and by a Python worker (5.7.0 and
// 5.2.6) starting later, from the hello the Go worker answers.
func TestMingleOverAMQP(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{Codec: peerCodec(peer)})
			ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{Timeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			start := func(node string) {
				w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: node})
				if err != nil {
					t.Fatal(err)
				}
				runGoWorker(t, w)
				eventually(t, 20*time.Second, node+" answering", func() bool {
					r, err := ctl.Ping(ctx, celerycompat.BroadcastTo(node))
					return err == nil && r[node] != nil
				})
			}
			revokedOn := func(node string) string {
				r, err := ctl.Inspect(ctx, "revoked", celerycompat.BroadcastTo(node))
				if err != nil {
					t.Fatalf("inspect revoked on %s: %v", node, err)
				}
				return string(r[node])
			}
			start("go1@mingle")
			id := "mingled-" + string(peer)
			if _, err := ctl.Revoke(ctx, []string{id}, false, celerycompat.BroadcastTo("go1@mingle")); err != nil {
				t.Fatal(err)
			}
			start("go2@mingle")
			// go2 answers its mailbox while it mingles (a second): wait for the mingle to end.
			eventually(t, 10*time.Second, "go2 learning the revoked id from go1's hello reply", func() bool {
				return strings.Contains(revokedOn("go2@mingle"), id)
			})
			pyNode := "py@mingle-" + string(peer)
			py := celerytest.StartPyWorker(t, peer, v.URL(), "disabled://", nil, "--hostname", pyNode)
			var got string
			eventually(t, 30*time.Second, "the Python worker answering", func() bool {
				r, err := ctl.Ping(ctx, celerycompat.BroadcastTo(pyNode))
				return err == nil && r[pyNode] != nil
			})
			if got = revokedOn(pyNode); !strings.Contains(got, id) {
				t.Errorf("the Python worker did not learn the revoked id at mingle: %s\nlog:\n%s", got, py.Log())
			}
		})
	}
}

// TestFlowerSeesGoWorkerOverAMQP runs Flower (the venv's) on RabbitMQ against a Go worker: the
// worker is listed online from its heartbeats, Flower's inspector gets its registry over remote
// control, Flower turns its task events on, and a Go-run task appears with its state and result.
func TestFlowerSeesGoWorkerOverAMQP(t *testing.T) {
	tr, v := newTransport(t, Config{Codec: peerCodec(celerytest.CeleryNew)})
	const node = "go@amqpflower"
	w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: node})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Register("fl.add", celerycompat.HandlerFunc(func(context.Context, *celerycompat.Request) (any, error) { return 5, nil }))
	stop := runGoWorker(t, w)
	f := celerytest.StartFlower(t, v.URL(), "disabled://")
	f.Poll("/api/workers?status=true", 60*time.Second, "flower listing the Go worker online", func(v map[string]any) bool {
		return v[node] == true
	})
	ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "flower enabling task events on the Go worker", func() bool {
		r, err := ctl.Inspect(testCtx(t), "conf", celerycompat.BroadcastTo(node))
		return err == nil && strings.Contains(string(r[node]), `"worker_send_task_events": true`)
	})
	p, err := celerycompat.NewProducer(tr, celerycompat.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	task, err := p.Send(testCtx(t), "fl.add", []any{2, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tasks := f.Poll("/api/tasks", 30*time.Second, "flower showing the task succeeded", func(v map[string]any) bool {
		tk, _ := v[task.ID].(map[string]any)
		return tk["state"] == "SUCCESS"
	})
	if tk := tasks[task.ID].(map[string]any); tk["name"] != "fl.add" || tk["result"] != "5" || tk["worker"] != node || tk["args"] != "(2, 3)" {
		t.Errorf("task in flower: %v", tk)
	}
	workers := f.Poll("/api/workers?refresh=1", 30*time.Second, "flower's inspector data for the Go worker", func(v map[string]any) bool {
		wk, _ := v[node].(map[string]any)
		return wk["registered"] != nil && wk["stats"] != nil
	})
	if reg, _ := workers[node].(map[string]any)["registered"].([]any); len(reg) != 1 || reg[0] != "fl.add" {
		t.Errorf("registered in flower: %v", workers[node])
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f.Poll("/api/workers?status=true", 30*time.Second, "flower listing the stopped Go worker offline", func(v map[string]any) bool {
		return v[node] == false
	})
}

// TestMailboxSurvivesLostConnection: when RabbitMQ closes every connection of the vhost, the Go
// worker's mailbox (and the control client's channel) reconnect, and the worker answers again.
func TestMailboxSurvivesLostConnection(t *testing.T) {
	tr, v := newTransport(t, Config{})
	const node = "go@reconnect"
	w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: node})
	if err != nil {
		t.Fatal(err)
	}
	runGoWorker(t, w)
	ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{})
	if err != nil {
		t.Fatal(err)
	}
	answers := func() bool {
		r, err := ctl.Ping(testCtx(t), celerycompat.BroadcastTo(node))
		return err == nil && r[node] != nil
	}
	eventually(t, 20*time.Second, "the worker answering", answers)
	v.CloseConnections(t, "test: lost connection")
	eventually(t, 30*time.Second, "the worker answering after the connection was lost", answers)
}
