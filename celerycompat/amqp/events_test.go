package amqp

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestPidboxTopologyMatchesCelery: the exchanges and the mailbox queue a Go worker declares on
// RabbitMQ (celery.pidbox, reply.celery.pidbox, celeryev, "<node>.celery.pidbox" with its flags
// and arguments) are those Python Celery's worker declared in the capture of each version, so
// that either side may declare them first without a 406.
func TestPidboxTopologyMatchesCelery(t *testing.T) {
	for _, tc := range []struct {
		ver   string
		codec celerycompat.Codec
	}{
		{"5.2.6", celerycompat.Codec{PeerVersion: celerycompat.Celery52}},
		{"5.7.0", celerycompat.Codec{PeerVersion: celerycompat.Celery55}},
	} {
		t.Run(tc.ver, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "wire", "amqp", tc.ver, "worker", "topology_ready.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				Worker            string
				Exchanges, Queues []map[string]any
			}
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			tr, v := newTransport(t, Config{Codec: tc.codec})
			w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: want.Worker})
			if err != nil {
				t.Fatal(err)
			}
			runGoWorker(t, w)
			ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "the worker answering", func() bool {
				r, err := ctl.Ping(testCtx(t), celerycompat.BroadcastTo(want.Worker))
				return err == nil && r[want.Worker] != nil
			})
			exItems := []string{"name", "type", "durable", "auto_delete", "internal", "arguments"}
			qItems := []string{"name", "durable", "auto_delete", "exclusive", "arguments"}
			names := map[string]bool{"celery.pidbox": true, "reply.celery.pidbox": true, "celeryev": true, want.Worker + ".celery.pidbox": true}
			pick := func(rows []map[string]any, items []string) []string {
				var out []string
				for _, r := range rows {
					if !names[r["name"].(string)] {
						continue
					}
					kept := map[string]any{}
					for _, it := range items {
						kept[it] = r[it]
					}
					if args, ok := kept["arguments"].([]any); ok {
						kept["arguments"] = argNames(args)
					}
					b, _ := json.Marshal(kept)
					out = append(out, string(b))
				}
				sort.Strings(out)
				return out
			}
			var got []string
			eventually(t, 10*time.Second, "celeryev declared by the first heartbeat", func() bool {
				got = pick(v.List(t, "list_exchanges", exItems...), exItems)
				return len(got) == 3
			})
			if diff := cmp.Diff(pick(want.Exchanges, exItems), got); diff != "" {
				t.Errorf("exchanges (-python +go):\n%s", diff)
			}
			if diff := cmp.Diff(pick(want.Queues, qItems), pick(v.List(t, "list_queues", qItems...), qItems)); diff != "" {
				t.Errorf("mailbox queue (-python +go):\n%s", diff)
			}
		})
	}
}

// TestPythonReceiverSeesGoEvents: Celery's own event receiver (app.events.Receiver, what
// `celery events` and Flower run) on RabbitMQ receives a Go worker's worker-online, -heartbeat
// and -offline and its task-received, -started and -succeeded events (batched as task.multi, as
// a prefork worker sends them), with the fields Celery's state keeps.
func TestPythonReceiverSeesGoEvents(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{Codec: peerCodec(peer)})
			const node = "go@amqpev"
			script, _ := filepath.Abs(filepath.Join("testdata", "events_recv.py"))
			cmd := celerytest.PythonCmd(t, peer, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=disabled://"}, script, node, "60")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			lines := make(chan string, 1024)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			select {
			case l := <-lines:
				if l != "READY" {
					t.Fatalf("receiver: %q\n%s", l, stderr.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("receiver not ready\n%s", stderr.String())
			}

			w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: node, SendEvents: true, HeartbeatInterval: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_ = w.Register("ev.add", celerycompat.HandlerFunc(func(_ context.Context, req *celerycompat.Request) (any, error) {
				return 5, nil
			}))
			stop := runGoWorker(t, w)
			p, err := celerycompat.NewProducer(tr, celerycompat.ProducerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			task, err := p.Send(testCtx(t), "ev.add", []any{2, 3}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			byType := map[string][]map[string]any{}
			seen := func(typ string) bool { mu.Lock(); defer mu.Unlock(); return len(byType[typ]) > 0 }
			collect := func(until func() bool, timeout time.Duration) {
				t.Helper()
				deadline := time.After(timeout)
				for !until() {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("receiver exited\n%s", stderr.String())
						}
						var ev map[string]any
						if err := json.Unmarshal([]byte(l), &ev); err != nil {
							t.Fatalf("receiver line %q: %v", l, err)
						}
						if ev["hostname"] != node {
							continue
						}
						mu.Lock()
						byType[ev["type"].(string)] = append(byType[ev["type"].(string)], ev)
						mu.Unlock()
					case <-deadline:
						t.Fatalf("events so far: %v\nreceiver stderr:\n%s", keys(byType), stderr.String())
					}
				}
			}
			collect(func() bool { return seen("task-succeeded") && seen("worker-heartbeat") }, 30*time.Second)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			collect(func() bool { return seen("worker-offline") }, 30*time.Second)

			for _, typ := range []string{"worker-online", "worker-heartbeat", "worker-offline"} {
				ev := byType[typ][0]
				if ev["freq"] != 1.0 || ev["sw_ident"] != celerycompat.SoftwareIdent || ev["clock"] == nil || ev["timestamp"] == nil || ev["pid"] == nil {
					t.Errorf("%s: %v", typ, ev)
				}
			}
			want := map[string]map[string]any{
				"task-received":  {"uuid": task.ID, "name": "ev.add", "args": "(2, 3)", "kwargs": "{}"},
				"task-started":   {"uuid": task.ID},
				"task-succeeded": {"uuid": task.ID, "result": "5"},
			}
			for typ, fields := range want {
				if len(byType[typ]) != 1 {
					t.Errorf("%s: %d events", typ, len(byType[typ]))
					continue
				}
				ev := byType[typ][0]
				for k, v := range fields {
					if ev[k] != v {
						t.Errorf("%s: %s = %v, want %v", typ, k, ev[k], v)
					}
				}
				if ev["clock"] == nil || ev["timestamp"] == nil {
					t.Errorf("%s without clock or timestamp: %v", typ, ev)
				}
			}
			if rt, _ := byType["task-succeeded"][0]["runtime"].(float64); rt < 0 {
				t.Errorf("runtime %v", byType["task-succeeded"][0]["runtime"])
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
