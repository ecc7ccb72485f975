package celerycompat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// blocker is a task handler that records each start and runs until released (or, when it honours
// its context, until cancelled, recording the cause).
type blocker struct {
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	causes  map[string]error
	ran     []string
}

func newBlocker(t *testing.T) *blocker {
	b := &blocker{release: make(chan struct{}), causes: map[string]error{}}
	t.Cleanup(b.unblock)
	return b
}

func (b *blocker) unblock() { b.once.Do(func() { close(b.release) }) }

func (b *blocker) handler(honourCtx bool) cc.Handler {
	return cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		b.mu.Lock()
		b.ran = append(b.ran, req.ID)
		b.mu.Unlock()
		if !honourCtx {
			<-b.release
			return "done", nil
		}
		select {
		case <-b.release:
			return "done", nil
		case <-ctx.Done():
			b.mu.Lock()
			b.causes[req.ID] = context.Cause(ctx)
			b.mu.Unlock()
			return nil, ctx.Err()
		}
	})
}

func (b *blocker) ranIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ran...)
}

// waitStart waits until task id has started (in any order with the others).
func (b *blocker) waitStart(t *testing.T, id string) {
	t.Helper()
	eventually(t, 10*time.Second, "task "+id+" starting", func() bool { return slices.Contains(b.ranIDs(), id) })
}

func (s *wstack) control() *cc.Control {
	s.t.Helper()
	c, err := cc.NewControl(s.broker, cc.ControlConfig{})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// listening waits until node answers ping: a broadcast published before a worker has subscribed
// to the mailbox never reaches it (as with Celery).
func listening(t *testing.T, c *cc.Control, node string) {
	t.Helper()
	eventually(t, 10*time.Second, node+" answering ping", func() bool {
		r, err := c.Ping(context.Background(), cc.BroadcastTo(node), cc.BroadcastTimeout(200*time.Millisecond))
		return err == nil && len(r) == 1
	})
}

// call sends command to node alone and returns its reply decoded with encoding/json.
func call(t *testing.T, c *cc.Control, node, command string, args map[string]any) any {
	t.Helper()
	replies, err := c.Broadcast(context.Background(), command, args, cc.BroadcastTo(node), cc.BroadcastTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	raw, ok := replies[node]
	if !ok {
		t.Fatalf("%s: no reply from %s (replies %v)", command, node, replies)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: reply %s: %v", command, raw, err)
	}
	return v
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }

func ids(infos []any) []string {
	var out []string
	for _, i := range infos {
		out = append(out, fmt.Sprint(obj(i)["id"]))
	}
	return out
}

func TestControlPingAddressingAndCleanup(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	nodes := []string{"a@ctl", "b@ctl"}
	for _, n := range nodes {
		runWorker(t, s.newWorker(cc.WorkerConfig{Hostname: n}))
	}
	ctl := s.control()
	member := func(n string) string { return "\x06\x16\x06\x16" + n + ".celery.pidbox" }
	eventually(t, 10*time.Second, "both workers bound to the mailbox", func() bool {
		got, _ := redis.Strings(s.r.Do(0, "SMEMBERS", "_kombu.binding.celery.pidbox"), nil)
		return slices.Contains(got, member("a@ctl")) && slices.Contains(got, member("b@ctl"))
	})
	eventually(t, 10*time.Second, "both workers answering ping", func() bool {
		r, err := ctl.Ping(context.Background(), cc.BroadcastLimit(2), cc.BroadcastTimeout(time.Second))
		return err == nil && len(r) == 2
	})

	tests := []struct {
		name string
		opts []cc.BroadcastOption
		want []string
	}{
		{"everyone", nil, nodes},
		{"destination", []cc.BroadcastOption{cc.BroadcastTo("b@ctl")}, []string{"b@ctl"}},
		{"glob", []cc.BroadcastOption{cc.BroadcastPattern("a@*", "glob")}, []string{"a@ctl"}},
		{"pcre", []cc.BroadcastOption{cc.BroadcastPattern(`b`, "pcre")}, []string{"b@ctl"}},
		{"nobody", []cc.BroadcastOption{cc.BroadcastTo("zz@ctl"), cc.BroadcastTimeout(300 * time.Millisecond)}, nil},
		{"limit", []cc.BroadcastOption{cc.BroadcastLimit(1)}, nil}, // one of the two
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]cc.BroadcastOption{cc.BroadcastTimeout(2 * time.Second)}, tt.opts...)
			start := time.Now()
			replies, err := ctl.Ping(context.Background(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "limit" {
				if len(replies) != 1 {
					t.Fatalf("limit 1: %d replies", len(replies))
				}
				return
			}
			if diff := cmp.Diff(tt.want, replies.Nodes(), cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" && !(len(tt.want) == 0 && len(replies) == 0) {
				t.Fatalf("nodes (-want +got):\n%s", diff)
			}
			for _, n := range replies.Nodes() {
				if string(replies[n]) != `{"ok": "pong"}` {
					t.Errorf("%s replied %s", n, replies[n])
				}
			}
			if tt.name == "destination" && time.Since(start) > 1500*time.Millisecond {
				t.Errorf("a destination reply took %v: collection should stop at the limit", time.Since(start))
			}
		})
	}
	if n, _ := redis.Int(s.r.Do(0, "SCARD", "_kombu.binding.reply.celery.pidbox"), nil); n != 0 {
		t.Errorf("%d reply bindings left after the broadcasts", n)
	}
	// A reply arriving after its client left (the limit case above) may recreate its list; every
	// reply list carries a 10 s expiry, so nothing stays for good.
	keys, _ := redis.Strings(s.r.Do(0, "KEYS", "*reply.celery.pidbox*"), nil)
	for _, k := range keys {
		if ttl, _ := redis.Int(s.r.Do(0, "TTL", k), nil); ttl <= 0 || ttl > 10 {
			t.Errorf("reply list %q left with TTL %d", k, ttl)
		}
	}
}

func TestControlInspectGoWorker(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	b := newBlocker(t)
	const node = "inspect@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node, PrefetchMultiplier: 3})
	if err := w.Register("ctl.block", b.handler(true)); err != nil {
		t.Fatal(err)
	}
	_ = w.Register("ctl.add", addHandler)
	runWorker(t, w)
	t.Cleanup(b.unblock) // before the worker's drain (cleanups run last-in first-out)
	ctl := s.control()
	listening(t, ctl, node)

	running := s.send("ctl.block", []any{1, "x"}, map[string]any{"task_id": "biz-1"})
	b.waitStart(t, running.ID)
	reserved := s.send("ctl.block", []any{2}, nil)
	eta := time.Now().Add(time.Hour).UTC()
	scheduled := s.send("ctl.add", []any{3, 4}, nil, cc.WithETA(eta))
	eventually(t, 10*time.Second, "a reserved and a scheduled task", func() bool {
		return len(list(call(t, ctl, node, "reserved", nil))) == 1 && len(list(call(t, ctl, node, "scheduled", nil))) == 1
	})

	tests := []struct {
		command string
		args    map[string]any
		check   func(t *testing.T, v any)
	}{
		{"ping", nil, func(t *testing.T, v any) {
			if obj(v)["ok"] != "pong" {
				t.Errorf("ping = %v", v)
			}
		}},
		{"active", map[string]any{"safe": nil}, func(t *testing.T, v any) {
			l := list(v)
			if len(l) != 1 {
				t.Fatalf("active = %v", v)
			}
			a := obj(l[0])
			want := map[string]any{"id": running.ID, "name": "ctl.block", "type": "ctl.block", "hostname": node,
				"args": []any{1.0, "x"}, "kwargs": map[string]any{"task_id": "biz-1"}, "acknowledged": false,
				"delivery_info": map[string]any{"exchange": "", "routing_key": "celery", "priority": 0.0, "redelivered": false}}
			for k, wv := range want {
				if diff := cmp.Diff(wv, a[k]); diff != "" {
					t.Errorf("active[%s] (-want +got):\n%s", k, diff)
				}
			}
			if ts, _ := a["time_start"].(float64); ts < float64(time.Now().Add(-time.Minute).Unix()) {
				t.Errorf("time_start = %v", a["time_start"])
			}
			if a["worker_pid"] == nil {
				t.Error("worker_pid is null for a running task")
			}
		}},
		{"active", map[string]any{"safe": true}, func(t *testing.T, v any) {
			a := obj(list(v)[0])
			if a["args"] != "(1, 'x')" || a["kwargs"] != "{'task_id': 'biz-1'}" {
				t.Errorf("safe active args %v kwargs %v, want repr strings", a["args"], a["kwargs"])
			}
		}},
		{"reserved", nil, func(t *testing.T, v any) {
			if got := ids(list(v)); !slices.Equal(got, []string{reserved.ID}) {
				t.Errorf("reserved ids = %v, want %s", got, reserved.ID)
			}
			if r := obj(list(v)[0]); r["time_start"] != nil || r["worker_pid"] != nil {
				t.Errorf("reserved request %v has a start", r)
			}
		}},
		{"scheduled", nil, func(t *testing.T, v any) {
			e := obj(list(v)[0])
			if e["eta"] != cc.PyISOFormat(eta.Truncate(time.Microsecond)) || e["priority"] != 6.0 || obj(e["request"])["id"] != scheduled.ID {
				t.Errorf("scheduled = %v (eta want %s)", e, cc.PyISOFormat(eta))
			}
		}},
		{"registered", map[string]any{"taskinfoitems": []any{}}, func(t *testing.T, v any) {
			if diff := cmp.Diff([]any{"ctl.add", "ctl.block"}, v); diff != "" {
				t.Errorf("registered (-want +got):\n%s", diff)
			}
		}},
		{"query_task", map[string]any{"ids": []any{running.ID, reserved.ID, scheduled.ID, "nope"}}, func(t *testing.T, v any) {
			m := obj(v)
			for id, st := range map[string]string{running.ID: "active", reserved.ID: "reserved", scheduled.ID: "scheduled"} {
				if e := list(m[id]); len(e) != 2 || e[0] != st || obj(e[1])["id"] != id {
					t.Errorf("query_task[%s] = %v, want %s", id, m[id], st)
				}
			}
			if len(m) != 3 {
				t.Errorf("query_task = %v", m)
			}
		}},
		{"stats", nil, func(t *testing.T, v any) {
			m := obj(v)
			pool := obj(m["pool"])
			if pool["max-concurrency"] != 1.0 || m["prefetch_count"] != 3.0 || m["pid"] == nil ||
				obj(m["broker"])["transport"] != "redis" || obj(m["rusage"])["utime"] == nil || m["total"] == nil {
				t.Errorf("stats = %v", m)
			}
			if _, ok := m["clock"].(string); !ok {
				t.Errorf("stats clock %v is not a string", m["clock"])
			}
		}},
		{"active_queues", nil, func(t *testing.T, v any) {
			q := obj(list(v)[0])
			if q["name"] != "celery" || q["routing_key"] != "celery" || obj(q["exchange"])["type"] != "direct" {
				t.Errorf("active_queues = %v", v)
			}
		}},
		{"clock", nil, func(t *testing.T, v any) {
			if c, _ := obj(v)["clock"].(float64); c < 1 {
				t.Errorf("clock = %v", v)
			}
		}},
		{"conf", map[string]any{"with_defaults": false}, func(t *testing.T, v any) {
			if obj(v)["worker_prefetch_multiplier"] != 3.0 {
				t.Errorf("conf = %v", v)
			}
		}},
		{"report", nil, func(t *testing.T, v any) {
			if s, _ := obj(v)["ok"].(string); !strings.Contains(s, "celerybridge") {
				t.Errorf("report = %v", v)
			}
		}},
		{"no_such_command", nil, func(t *testing.T, v any) {
			if diff := cmp.Diff(map[string]any{"error": "KeyError('no_such_command')"}, v); diff != "" {
				t.Errorf("unknown command (-want +got):\n%s", diff)
			}
		}},
		{"autoscale", map[string]any{"max": 4, "min": 1}, func(t *testing.T, v any) {
			if obj(v)["error"] != "ValueError('Autoscale not enabled')" {
				t.Errorf("autoscale = %v", v)
			}
		}},
		{"hello", map[string]any{"from_node": node, "revoked": []any{}}, func(t *testing.T, v any) {
			if v != nil {
				t.Errorf("own hello = %v, want null", v)
			}
		}},
		{"hello", map[string]any{"from_node": "py@elsewhere", "revoked": map[string]any{"old-1": []any{12.5, "old-1"}}}, func(t *testing.T, v any) {
			m := obj(v)
			if !slices.Contains(list(m["revoked"]), any("old-1")) || m["clock"] == nil {
				t.Errorf("hello = %v, want old-1 merged and a clock", v)
			}
		}},
		{"revoked", nil, func(t *testing.T, v any) {
			if !slices.Contains(list(v), any("old-1")) {
				t.Errorf("revoked = %v, want the id merged by hello", v)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) { tt.check(t, call(t, ctl, node, tt.command, tt.args)) })
	}
}

// revokedEvents collects task_revoked hooks.
func revokedHook(hooks *cc.Hooks) chan cc.TaskRevoked {
	ch := make(chan cc.TaskRevoked, 16)
	hooks.OnTaskRevoked(func(ctx context.Context, e *cc.TaskRevoked) error { ch <- *e; return nil })
	return ch
}

func waitRevokedHook(t *testing.T, ch chan cc.TaskRevoked, id string) cc.TaskRevoked {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Request.ID == id {
				return e
			}
		case <-deadline:
			t.Fatalf("no task_revoked for %s", id)
		}
	}
}

func wantRevoked(t *testing.T, res *cc.AsyncResult, reason string) {
	t.Helper()
	meta, err := wait(t, res, 10*time.Second)
	var te *cc.TaskError
	if meta == nil || meta.Status != cc.StateRevoked || !errors.As(err, &te) || te.ExcType != "TaskRevokedError" || te.Message() != reason {
		t.Fatalf("task %s: %v, %v; want REVOKED TaskRevokedError(%q)", res.ID, meta, err, reason)
	}
}

func TestControlRevoke(t *testing.T) {
	tests := []struct {
		name  string
		where string // "queued", "reserved", "scheduled"
	}{
		{"queued task never runs", "queued"},
		{"prefetched task discarded at once", "reserved"},
		{"ETA-held task discarded at once", "scheduled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			b := newBlocker(t)
			hooks := &cc.Hooks{}
			revoked := revokedHook(hooks)
			prefetch := 1
			if tt.where != "queued" {
				prefetch = 2 // room beside the running task
			}
			const node = "revoke@ctl"
			w := s.newWorker(cc.WorkerConfig{Hostname: node, PrefetchMultiplier: prefetch, Hooks: hooks})
			_ = w.Register("ctl.block", b.handler(true))
			runWorker(t, w)
			ctl := s.control()
			listening(t, ctl, node)

			first := s.send("ctl.block", []any{"first"}, nil)
			b.waitStart(t, first.ID)
			var opts []cc.SendOption
			if tt.where == "scheduled" {
				opts = append(opts, cc.WithCountdown(time.Hour))
			}
			victim := s.send("ctl.block", []any{"victim"}, nil, opts...)
			switch tt.where {
			case "reserved":
				eventually(t, 10*time.Second, "victim prefetched", func() bool { return len(list(call(t, ctl, node, "reserved", nil))) == 1 })
			case "scheduled":
				eventually(t, 10*time.Second, "victim held for its ETA", func() bool { return len(list(call(t, ctl, node, "scheduled", nil))) == 1 })
			}
			reply := call(t, ctl, node, "revoke", map[string]any{"task_id": victim.ID, "terminate": false, "signal": "SIGTERM"})
			if want := "tasks {'" + victim.ID + "'} flagged as revoked"; obj(reply)["ok"] != want {
				t.Errorf("revoke reply %v, want ok %q", reply, want)
			}
			if tt.where != "queued" {
				e := waitRevokedHook(t, revoked, victim.ID)
				if e.Terminated || e.Expired || e.Signum != nil {
					t.Errorf("task_revoked = %+v", e)
				}
			}
			wantRevoked(t, victim, "revoked")
			b.unblock()
			if _, err := wait(t, first, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if tt.where == "queued" {
				waitRevokedHook(t, revoked, victim.ID) // discarded when fetched
			}
			eventually(t, 10*time.Second, "nothing held", func() bool { return s.hlen("unacked") == 0 && s.llen("celery") == 0 })
			if slices.Contains(b.ranIDs(), victim.ID) {
				t.Fatal("the revoked task ran")
			}
			if got := list(call(t, ctl, node, "revoked", nil)); !slices.Contains(got, any(victim.ID)) {
				t.Errorf("revoked = %v", got)
			}
		})
	}
}

func TestControlRevokeTerminate(t *testing.T) {
	for _, honour := range []bool{true, false} {
		t.Run(fmt.Sprintf("handler honours ctx %v", honour), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			b := newBlocker(t)
			hooks := &cc.Hooks{}
			revoked := revokedHook(hooks)
			const node = "term@ctl"
			w := s.newWorker(cc.WorkerConfig{Hostname: node, Hooks: hooks})
			_ = w.Register("ctl.block", b.handler(honour))
			_ = w.Register("ctl.add", addHandler)
			runWorker(t, w)
			ctl := s.control()
			listening(t, ctl, node)

			victim := s.send("ctl.block", []any{"v"}, nil)
			b.waitStart(t, victim.ID)
			replies, err := ctl.Revoke(context.Background(), []string{victim.ID}, true, cc.BroadcastTo(node))
			if err != nil {
				t.Fatal(err)
			}
			if got := string(replies[node]); got != `{"ok": "terminate: `+victim.ID+`"}` {
				t.Errorf("reply %s", got)
			}
			e := waitRevokedHook(t, revoked, victim.ID)
			if !e.Terminated || e.Expired || e.Signum == nil || *e.Signum != 15 {
				t.Errorf("task_revoked = %+v, want terminated with signum 15", e)
			}
			wantRevoked(t, victim, "terminated")
			if honour {
				b.mu.Lock()
				cause := b.causes[victim.ID]
				b.mu.Unlock()
				var te *cc.TerminatedError
				if !errors.As(cause, &te) || te.Signal != "SIGTERM" || te.Signum != 15 || te.TaskID != victim.ID {
					t.Errorf("handler's context cause = %v, want *TerminatedError SIGTERM", cause)
				}
			}
			// The worker goes on to the next task without waiting for an ignoring handler.
			next := s.send("ctl.add", []any{1, 2}, nil)
			if meta, err := wait(t, next, 10*time.Second); err != nil || meta.Status != cc.StateSuccess {
				t.Fatalf("next task: %v %v", meta, err)
			}
			eventually(t, 10*time.Second, "terminated message acked", func() bool { return s.hlen("unacked") == 0 })
			unknown := call(t, ctl, node, "revoke", map[string]any{"task_id": []any{"not-here"}, "terminate": true})
			if obj(unknown)["ok"] != "terminate: tasks unknown" {
				t.Errorf("terminate of an unknown id: %v", unknown)
			}
		})
	}
}

func TestControlRevokeByStampedHeaders(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{Codec: cc.Codec{PeerVersion: cc.Celery53}})
	hooks := &cc.Hooks{}
	revoked := revokedHook(hooks)
	const node = "stamps@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node, Hooks: hooks})
	var ran sync.Map
	_ = w.Register("ctl.rec", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		ran.Store(req.ID, true)
		return nil, nil
	}))
	runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)
	reply := call(t, ctl, node, "revoke_by_stamped_headers", map[string]any{"headers": map[string]any{"mtask_id": []any{"m1"}}, "terminate": false})
	if got := obj(reply)["ok"]; got != "headers {'mtask_id': ['m1']} flagged as revoked, but not terminated" {
		t.Errorf("reply %v", reply)
	}
	publish := func(id, stamp string) {
		m := &cc.Message{Task: "ctl.rec", ID: id, DeliveryTag: id + "-tag", DeliveryInfo: cc.DeliveryInfo{RoutingKey: "celery"},
			Args: []any{}, Kwargs: map[string]any{}, StampedHeaders: []string{"mtask_id"}, Stamps: map[string]any{"mtask_id": stamp}}
		if err := s.broker.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	publish("stamped-1", "m1")
	publish("stamped-2", "m2")
	waitRevokedHook(t, revoked, "stamped-1")
	eventually(t, 10*time.Second, "the other stamp ran", func() bool { _, ok := ran.Load("stamped-2"); return ok })
	if _, ok := ran.Load("stamped-1"); ok {
		t.Fatal("a message with a revoked stamp ran")
	}
}

// proto1NoArgs is a protocol 1 message as Celery 3 style producers write it when a task takes no
// arguments: the body has no "args" and no "kwargs" keys at all, which Celery reads as () and {}.
func proto1NoArgs(t *testing.T, task, id string, eta time.Time) []byte {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"task": task, "id": id, "eta": cc.PyISOFormat(eta), "utc": true})
	env, _ := json.Marshal(map[string]any{
		"body": b64(string(body)), "content-encoding": "utf-8", "content-type": "application/json", "headers": map[string]any{},
		"properties": map[string]any{"correlation_id": id, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
			"delivery_info": map[string]any{"exchange": "", "routing_key": "celery"}, "delivery_tag": "tag-" + id},
	})
	return env
}

// TestControlInspectNoArgs: Celery's Request.info gives [] and {} for a request without arguments
// (what `celery inspect scheduled|reserved|active` shows), never null.
func TestControlInspectNoArgs(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const node = "noargs@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node})
	_ = w.Register("ctl.add", addHandler)
	runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)
	s.r.Do(0, "LPUSH", "celery", proto1NoArgs(t, "ctl.add", "noargs-1", time.Now().Add(time.Hour)))
	var req map[string]any
	eventually(t, 10*time.Second, "the ETA task held", func() bool {
		l := list(call(t, ctl, node, "scheduled", nil))
		if len(l) == 1 {
			req = obj(obj(l[0])["request"])
		}
		return req != nil
	})
	if req["id"] != "noargs-1" || !cmp.Equal(req["args"], []any{}) || !cmp.Equal(req["kwargs"], map[string]any{}) {
		t.Errorf("scheduled request %v, want args [] and kwargs {}", req)
	}
}
