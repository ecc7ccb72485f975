package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// peerCodec is the codec that speaks to peer (its wire version).
func peerCodec(peer celerytest.Peer) celerycompat.Codec {
	if peer == celerytest.CeleryNew {
		return celerycompat.Codec{PeerVersion: celerycompat.Celery55}
	}
	return celerycompat.Codec{PeerVersion: celerycompat.Celery52}
}

// runGoWorker runs w until the test ends; stop stops it early and returns Run's error.
func runGoWorker(t *testing.T, w *celerycompat.Worker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-runErr:
				if errors.Is(err, context.Canceled) {
					err = nil
				}
			case <-time.After(30 * time.Second):
				err = errors.New("worker did not stop within 30 s")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// celeryCLI runs `python -m celery -A capapp <args>` of peer against the vhost.
func celeryCLI(t *testing.T, peer celerytest.Peer, url string, args ...string) ([]byte, error) {
	t.Helper()
	py, _ := celerytest.Python(t, peer)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-m", "celery", "-A", "capapp"}, args...)...)
	cmd.Dir = celerytest.PythonDir(t)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+url, "BACKEND_URL=disabled://")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

// eventually polls cond every 100 ms until it holds, failing after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// blocker is a task handler that records the ids it ran and blocks ids in hold until released.
type blocker struct {
	mu      sync.Mutex
	ran     []string
	started chan string
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 16), release: make(chan struct{})}
}

func (b *blocker) handler(ctx context.Context, req *celerycompat.Request) (any, error) {
	b.mu.Lock()
	b.ran = append(b.ran, req.ID)
	b.mu.Unlock()
	b.started <- req.ID
	if len(req.Args) > 0 && req.Args[0] == "block" {
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return "done", nil
}

func (b *blocker) didRun(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.ran, id)
}

func waitStarted(t *testing.T, b *blocker, id string) {
	t.Helper()
	for deadline := time.After(30 * time.Second); ; {
		select {
		case got := <-b.started:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("task %s never started", id)
		}
	}
}

// TestCeleryCLIControlsGoWorker: Python Celery's own `celery inspect` and `celery control`
// (5.7.0 and 5.2.6) over RabbitMQ see a Go worker and control it, while it is busy: ping, active
// (the running task), registered, stats (the AMQP broker section), and revoke of a queued task,
// which the Go worker then does not run.
func TestCeleryCLIControlsGoWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			celerytest.Python(t, peer)
			tr, v := newTransport(t, Config{Codec: peerCodec(peer)})
			const node = "go@amqpctl"
			w, err := celerycompat.NewWorker(tr, celerycompat.WorkerConfig{Hostname: node, Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			b := newBlocker()
			if err := w.Register("ctl.block", celerycompat.HandlerFunc(b.handler)); err != nil {
				t.Fatal(err)
			}
			runGoWorker(t, w)
			t.Cleanup(func() { close(b.release) })
			p, err := celerycompat.NewProducer(tr, celerycompat.ProducerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			busy, err := p.Send(ctx, "ctl.block", []any{"block"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			waitStarted(t, b, busy.ID)

			inspect := func(cmd string) any {
				t.Helper()
				raw, err := celeryCLI(t, peer, v.URL(), "inspect", cmd, "--json", "--timeout", "5", "--destination", node)
				var out map[string]any
				if err == nil {
					err = json.Unmarshal(raw, &out)
				}
				if err != nil {
					t.Fatalf("celery inspect %s: %v\n%s", cmd, err, raw)
				}
				return out[node]
			}
			if got := jsonish(inspect("ping")); !jsonEq(got, map[string]any{"ok": "pong"}) {
				t.Errorf("ping: %v", got)
			}
			active, _ := inspect("active").([]any)
			if len(active) != 1 || active[0].(map[string]any)["id"] != busy.ID || active[0].(map[string]any)["hostname"] != node {
				t.Errorf("active: %v", active)
			}
			if reg, _ := inspect("registered").([]any); !slices.Contains(reg, any("ctl.block")) {
				t.Errorf("registered: %v", reg)
			}
			stats, _ := inspect("stats").(map[string]any)
			if br, _ := stats["broker"].(map[string]any); br["transport"] != "amqp" || br["virtual_host"] != v.Name {
				t.Errorf("stats broker section: %v", stats["broker"])
			}

			// Queued behind the busy task: revoked by the CLI, it must never run.
			doomed, err := p.Send(ctx, "ctl.block", []any{"quick"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := celeryCLI(t, peer, v.URL(), "control", "revoke", doomed.ID, "--timeout", "5", "--destination", node)
			if err != nil || !strings.Contains(string(out), node) {
				t.Fatalf("celery control revoke: %v\n%s", err, out)
			}
			after, err := p.Send(ctx, "ctl.block", []any{"quick"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			b.release <- struct{}{}
			waitStarted(t, b, after.ID)
			if b.didRun(doomed.ID) {
				t.Errorf("revoked task %s ran", doomed.ID)
			}
			ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{Timeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			r, err := ctl.Inspect(ctx, "revoked", celerycompat.BroadcastTo(node))
			if err != nil || !strings.Contains(string(r[node]), doomed.ID) {
				t.Errorf("inspect revoked: %v %s", err, r[node])
			}
		})
	}
}

func jsonEq(a, b any) bool {
	x, _ := json.Marshal(jsonish(a))
	y, _ := json.Marshal(jsonish(b))
	return bytes.Equal(x, y)
}

// TestControlSeesPythonWorker: the Go Control client over RabbitMQ pings and inspects a real
// Python worker (5.7.0 and 5.2.6).
func TestControlSeesPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{Codec: peerCodec(peer)})
			node := "py@amqpctl-" + string(peer)
			w := celerytest.StartPyWorker(t, peer, v.URL(), "disabled://", nil, "--hostname", node)
			ctl, err := celerycompat.NewControl(tr, celerycompat.ControlConfig{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			var r celerycompat.Replies
			eventually(t, 30*time.Second, "the Python worker answering ping", func() bool {
				r, err = ctl.Ping(ctx, celerycompat.BroadcastTo(node))
				return err == nil && r[node] != nil
			})
			if got, _ := r.Value(node); !jsonEq(got, map[string]any{"ok": "pong"}) {
				t.Errorf("ping reply %s", r[node])
			}
			reg, err := ctl.Inspect(ctx, "registered", celerycompat.BroadcastTo(node))
			if err != nil || !strings.Contains(string(reg[node]), `"cap.add"`) {
				t.Errorf("registered: %v %s\nworker log:\n%s", err, reg[node], w.Log())
			}
			// Without a destination the client collects until its timeout: every node answers.
			all, err := ctl.Ping(ctx, celerycompat.BroadcastTimeout(2*time.Second))
			if err != nil || all[node] == nil {
				t.Errorf("broadcast ping: %v %v", err, all.Nodes())
			}
		})
	}
}
