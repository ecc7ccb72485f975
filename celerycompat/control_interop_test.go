package celerycompat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// celeryCLI runs `python -m celery -A capapp <args>` of peer against the stack's Redis.
func (s *wstack) celeryCLI(peer celerytest.Peer, args ...string) ([]byte, error) {
	py, _ := celerytest.Python(s.t, peer)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-m", "celery", "-A", "capapp"}, args...)...)
	cmd.Dir = celerytest.PythonDir(s.t)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+s.r.URL(0), "BACKEND_URL="+s.r.URL(1))
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

// TestCeleryCLIControlsGoWorker drives a Go worker and a Python worker of each peer with
// Celery's own `celery inspect` / `celery control`, Python's app.control, and the Go client.
func TestCeleryCLIControlsGoWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) { cliInterop(t, peer) })
	}
}

func cliInterop(t *testing.T, peer celerytest.Peer) {
	celerytest.Python(t, peer)
	s := newWStack(t, cc.BrokerConfig{})
	b := newBlocker(t)
	hooks := &cc.Hooks{}
	revoked := revokedHook(hooks)
	goNode, pyNode := "go@cli", "py@cli-"+string(peer)
	w := s.newWorker(cc.WorkerConfig{Hostname: goNode, PrefetchMultiplier: 3, Hooks: hooks})
	_ = w.Register("ctl.block", b.handler(true))
	_ = w.Register("ctl.add", addHandler)
	runWorker(t, w)
	t.Cleanup(b.unblock) // before the worker's drain (cleanups run last-in first-out)
	ctl := s.control()
	listening(t, ctl, goNode)

	// Revoked before the Python worker starts: its mingle (hello) must learn it from the Go worker.
	preRevoked := "pre-revoked-" + string(peer)
	if _, err := ctl.Revoke(context.Background(), []string{preRevoked}, false, cc.BroadcastTo(goNode)); err != nil {
		t.Fatal(err)
	}
	py := celerytest.StartPyWorker(t, peer, s.r.URL(0), s.r.URL(1), nil, "--hostname", pyNode, "--queues", "pyq")
	listening(t, ctl, pyNode)

	biz := "biz-" + string(peer)
	running := s.send("ctl.block", []any{1, "x"}, map[string]any{"task_id": biz})
	b.waitStart(t, running.ID)
	// Sent without arguments: inspect must show them as Celery's Request.info does ([] and {}).
	etaTask := s.send("ctl.add", nil, nil, cc.WithCountdown(time.Hour))
	pyETA := s.send("cap.add", nil, nil, cc.WithQueue("pyq"), cc.WithCountdown(time.Hour))
	eventually(t, 10*time.Second, "the ETA task held", func() bool {
		return len(list(call(t, ctl, goNode, "scheduled", nil))) == 1
	})
	eventually(t, 15*time.Second, "the Python worker holding its ETA task", func() bool {
		r, err := ctl.Inspect(context.Background(), "scheduled", cc.BroadcastTo(pyNode), cc.BroadcastTimeout(2*time.Second))
		return err == nil && strings.Contains(string(r[pyNode]), pyETA.ID)
	})

	// `celery inspect <cmd> --json`, all at once.
	cmds := []string{"ping", "active", "reserved", "scheduled", "registered", "stats", "revoked"}
	out := make(map[string]map[string]any, len(cmds))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, err := s.celeryCLI(peer, "inspect", c, "--json", "--timeout", "5")
			var v map[string]any
			if err == nil {
				err = json.Unmarshal(raw, &v)
			}
			if err != nil {
				t.Errorf("celery inspect %s: %v\n%s", c, err, raw)
			}
			mu.Lock()
			out[c] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	checks := []struct {
		cmd   string
		check func(t *testing.T, goReply, pyReply any)
	}{
		{"ping", func(t *testing.T, g, p any) {
			if obj(g)["ok"] != "pong" || obj(p)["ok"] != "pong" {
				t.Errorf("ping: go %v, python %v", g, p)
			}
		}},
		{"active", func(t *testing.T, g, p any) {
			l := list(g)
			if len(l) != 1 {
				t.Fatalf("active on go: %v", g)
			}
			a := obj(l[0])
			if a["id"] != running.ID || a["name"] != "ctl.block" || !cmp.Equal(a["args"], []any{1.0, "x"}) ||
				!cmp.Equal(a["kwargs"], map[string]any{"task_id": biz}) || a["hostname"] != goNode {
				t.Errorf("active on go: %v", a)
			}
			if len(list(p)) != 0 {
				t.Errorf("active on python: %v", p)
			}
		}},
		{"reserved", func(t *testing.T, g, p any) {
			if l, ok := g.([]any); !ok || len(l) != 0 {
				t.Errorf("reserved on go: %v", g)
			}
		}},
		{"scheduled", func(t *testing.T, g, p any) {
			l := list(g)
			if len(l) != 1 || obj(obj(l[0])["request"])["id"] != etaTask.ID || obj(l[0])["eta"] == nil {
				t.Fatalf("scheduled on go: %v", g)
			}
			pl := list(p)
			if len(pl) != 1 || obj(obj(pl[0])["request"])["id"] != pyETA.ID {
				t.Fatalf("scheduled on python: %v", p)
			}
			// A task without arguments: the Go worker's request shows them as the Python one does.
			goReq, pyReq := obj(obj(l[0])["request"]), obj(obj(pl[0])["request"])
			for _, k := range []string{"args", "kwargs"} {
				if !cmp.Equal(goReq[k], pyReq[k]) || goReq[k] == nil {
					t.Errorf("scheduled request %s: go %#v, python %#v", k, goReq[k], pyReq[k])
				}
			}
		}},
		{"registered", func(t *testing.T, g, p any) {
			if !cmp.Equal(g, []any{"ctl.add", "ctl.block"}) || !slices.Contains(list(p), any("cap.add")) {
				t.Errorf("registered: go %v, python %v", g, p)
			}
		}},
		{"stats", func(t *testing.T, g, p any) {
			gs := obj(g)
			if obj(gs["pool"])["max-concurrency"] != 1.0 || gs["prefetch_count"] != 3.0 || gs["total"] == nil {
				t.Errorf("stats on go: %v", gs)
			}
		}},
		{"revoked", func(t *testing.T, g, p any) {
			if !slices.Contains(list(g), any(preRevoked)) {
				t.Errorf("revoked on go: %v", g)
			}
			if !slices.Contains(list(p), any(preRevoked)) {
				t.Errorf("revoked on python %v: mingle did not take the Go worker's revoked ids", p)
			}
		}},
	}
	for _, c := range checks {
		t.Run("inspect "+c.cmd, func(t *testing.T) {
			replies := out[c.cmd]
			g, okGo := replies[goNode]
			p, okPy := replies[pyNode]
			if !okGo || !okPy {
				t.Fatalf("inspect %s: replies from %v, want %s and %s", c.cmd, replies, goNode, pyNode)
			}
			c.check(t, g, p)
		})
	}

	t.Run("control revoke", func(t *testing.T) {
		raw, err := s.celeryCLI(peer, "control", "revoke", etaTask.ID, "--json", "--timeout", "5")
		if err != nil {
			t.Fatalf("celery control revoke: %v\n%s", err, raw)
		}
		var replies []map[string]map[string]any
		if err := json.Unmarshal(raw, &replies); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		byNode := map[string]string{}
		for _, r := range replies {
			for n, v := range r {
				byNode[n], _ = v["ok"].(string)
			}
		}
		if byNode[goNode] != "tasks {'"+etaTask.ID+"'} flagged as revoked" || !strings.Contains(byNode[pyNode], "flagged as revoked") {
			t.Errorf("revoke replies %v", byNode)
		}
		e := waitRevokedHook(t, revoked, etaTask.ID)
		if e.Terminated || e.Expired {
			t.Errorf("task_revoked %+v", e)
		}
		wantRevoked(t, etaTask, "revoked")
		if len(list(call(t, ctl, goNode, "scheduled", nil))) != 0 {
			t.Error("the revoked ETA task is still held")
		}
	})

	t.Run("main_api task-status finds the running Go task", func(t *testing.T) {
		raw := celerytest.RunPython(t, peer, []string{"BROKER_URL=" + s.r.URL(0), "BACKEND_URL=" + s.r.URL(1)},
			60*time.Second, "control.py", "task-status", biz, "--timeout", "3")
		var st map[string]any
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		want := map[string]any{"found": true, "status": "active", "node": goNode, "celery_task_id": running.ID,
			"args": []any{1.0, "x"}, "kwargs": map[string]any{"task_id": biz}}
		if diff := cmp.Diff(want, st); diff != "" {
			t.Errorf("task-status (-want +got):\n%s", diff)
		}
	})

	t.Run("go client", func(t *testing.T) {
		replies, err := ctl.Ping(context.Background(), cc.BroadcastTimeout(3*time.Second), cc.BroadcastLimit(2))
		if err != nil || !cmp.Equal(replies.Nodes(), []string{goNode, pyNode}) {
			t.Fatalf("Ping: %v %v", replies, err)
		}
		// Both workers answer an unknown command the same way.
		replies, err = ctl.Broadcast(context.Background(), "no_such_command", nil, cc.BroadcastTimeout(3*time.Second), cc.BroadcastLimit(2))
		if err != nil || len(replies) != 2 || string(replies[goNode]) != string(replies[pyNode]) {
			t.Fatalf("unknown command: go %s, python %s (%v)", replies[goNode], replies[pyNode], err)
		}
		// Inspect through the Go client sees the Python worker's registry too.
		replies, err = ctl.Inspect(context.Background(), "registered", cc.BroadcastTo(pyNode), cc.BroadcastTimeout(3*time.Second))
		if v, _ := replies.Value(pyNode); err != nil || !slices.Contains(list(v), any("cap.add")) {
			t.Fatalf("registered on python via Go: %v %v", v, err)
		}
	})

	t.Run("go client revokes a Python-held task", func(t *testing.T) {
		victim := s.send("cap.add", []any{1, 2}, nil, cc.WithQueue("pyq"), cc.WithCountdown(3*time.Second))
		eventually(t, 15*time.Second, "the Python worker holding the ETA task", func() bool {
			r, err := ctl.Inspect(context.Background(), "scheduled", cc.BroadcastTo(pyNode), cc.BroadcastTimeout(2*time.Second))
			return err == nil && strings.Contains(string(r[pyNode]), victim.ID)
		})
		replies, err := ctl.Revoke(context.Background(), []string{victim.ID}, false, cc.BroadcastTimeout(3*time.Second), cc.BroadcastLimit(2))
		if err != nil {
			t.Fatal(err)
		}
		var pyReply map[string]any
		_ = json.Unmarshal(replies[pyNode], &pyReply)
		if s, _ := pyReply["ok"].(string); !strings.Contains(s, victim.ID) || !strings.Contains(s, "flagged as revoked") {
			t.Errorf("python's revoke reply %s", replies[pyNode])
		}
		wantRevoked(t, victim, "revoked")
		// Past the ETA the Python worker discards it: the stored state stays REVOKED.
		eventually(t, 20*time.Second, "the Python worker releasing the ETA task", func() bool {
			r, err := ctl.Inspect(context.Background(), "scheduled", cc.BroadcastTo(pyNode), cc.BroadcastTimeout(2*time.Second))
			return err == nil && len(r) == 1 && !strings.Contains(string(r[pyNode]), victim.ID)
		})
		wantRevoked(t, victim, "revoked")
		if strings.Contains(py.Log(), "Task cap.add["+victim.ID+"] succeeded") {
			t.Error("the Python worker ran the revoked task")
		}
	})
	b.unblock()
	if _, err := wait(t, running, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The only traceback allowed is the one Celery logs for the unknown command sent above.
	log := py.Log()
	if strings.Count(log, "Traceback") != strings.Count(log, "pidbox command error: KeyError('no_such_command')") {
		t.Errorf("the Python worker logged a traceback beside the Go worker:\n%s", log)
	}
}
