package celerycompat_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// celeryEvent is one event as a receiver sees it, with the channel and envelope it came in.
type celeryEvent struct {
	channel string
	env     map[string]any
	fields  map[string]any
}

// eventTap collects what is published on the celeryev fanout, as Flower subscribes to it.
type eventTap struct {
	mu     sync.Mutex
	events []celeryEvent
	errs   []error
}

func tapEvents(t *testing.T, s *wstack) *eventTap {
	t.Helper()
	tap := &eventTap{}
	c, err := s.pool.GetContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("/0.celeryev/*"); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			switch m := psc.Receive().(type) {
			case redis.Subscription:
				if m.Kind == "psubscribe" {
					close(subscribed)
				}
				if m.Count == 0 {
					return
				}
			case redis.Message:
				tap.add(m.Channel, m.Data)
			case error:
				return
			}
		}
	}()
	<-subscribed
	t.Cleanup(func() { _ = psc.PUnsubscribe(); <-done; c.Close() })
	return tap
}

func (tap *eventTap) add(channel string, raw []byte) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	var env map[string]any
	if err := json.Unmarshal(raw, &env); err != nil {
		tap.errs = append(tap.errs, err)
		return
	}
	body, err := base64.StdEncoding.DecodeString(env["body"].(string))
	if err != nil {
		tap.errs = append(tap.errs, err)
		return
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		tap.errs = append(tap.errs, err)
		return
	}
	switch x := v.(type) {
	case []any: // task.multi
		for _, e := range x {
			tap.events = append(tap.events, celeryEvent{channel, env, e.(map[string]any)})
		}
	case map[string]any:
		tap.events = append(tap.events, celeryEvent{channel, env, x})
	}
}

func (tap *eventTap) find(typ, uuid string) (celeryEvent, bool) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, e := range tap.events {
		if e.fields["type"] == typ && (uuid == "" || e.fields["uuid"] == uuid) {
			return e, true
		}
	}
	return celeryEvent{}, false
}

func (tap *eventTap) count(typ string) int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	n := 0
	for _, e := range tap.events {
		if e.fields["type"] == typ {
			n++
		}
	}
	return n
}

func (tap *eventTap) wait(t *testing.T, typ, uuid string) celeryEvent {
	t.Helper()
	var e celeryEvent
	eventually(t, 10*time.Second, typ+" "+uuid, func() bool {
		var ok bool
		e, ok = tap.find(typ, uuid)
		return ok
	})
	return e
}

func TestWorkerEvents(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	tap := tapEvents(t, s)
	const node = "events@ctl"
	w := s.newWorker(cc.WorkerConfig{Hostname: node, SendEvents: true, HeartbeatInterval: 100 * time.Millisecond})
	_ = w.Register("ctl.add", addHandler)
	_ = w.Register("ctl.fail", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, &cc.TaskError{ExcType: "MyError", ExcModule: "capapp", ExcMessage: []any{"boom"}}
	}))
	_ = w.Register("ctl.retry", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if req.Retries == 0 {
			return nil, cc.Retry(&cc.TaskError{ExcType: "MyError", ExcMessage: []any{"again"}}, cc.RetryIn(10*time.Millisecond))
		}
		return "ok", nil
	}))
	stop := runWorker(t, w)
	ctl := s.control()
	listening(t, ctl, node)

	ok := s.send("ctl.add", []any{2, 3}, map[string]any{"k": "v"})
	failed := s.send("ctl.fail", nil, nil)
	retried := s.send("ctl.retry", nil, nil)
	unknown := s.send("ctl.nope", nil, nil)
	expired := s.send("ctl.add", []any{1, 1}, nil, cc.WithExpires(time.Now().Add(-time.Minute)))
	eta := time.Now().Add(time.Hour)
	later := s.send("ctl.add", []any{1, 2}, nil, cc.WithETA(eta))

	tests := []struct {
		typ, uuid string
		want      map[string]any // exact values
		present   []string       // keys that must exist
	}{
		{"worker-online", "", map[string]any{"freq": 0.1, "sw_ident": "celerybridge", "sw_sys": "Linux"},
			[]string{"active", "processed", "loadavg", "sw_ver"}},
		{"worker-heartbeat", "", map[string]any{"freq": 0.1}, []string{"active", "processed", "loadavg"}},
		{"task-received", ok.ID, map[string]any{"name": "ctl.add", "args": "(2, 3)", "kwargs": "{'k': 'v'}",
			"root_id": ok.ID, "parent_id": nil, "retries": 0.0, "eta": nil, "expires": nil}, nil},
		{"task-received", later.ID, map[string]any{"eta": protocol.PyISOFormat(eta.UTC().Truncate(time.Microsecond))}, nil},
		{"task-started", ok.ID, nil, nil},
		{"task-succeeded", ok.ID, map[string]any{"result": "5.0"}, []string{"runtime"}},
		{"task-failed", failed.ID, map[string]any{"exception": "MyError('boom')"}, []string{"traceback"}},
		{"task-retried", retried.ID, map[string]any{"exception": "MyError('again')"}, []string{"traceback"}},
		{"task-succeeded", retried.ID, map[string]any{"result": "'ok'"}, nil},
		{"task-failed", unknown.ID, map[string]any{"exception": "NotRegistered('ctl.nope')"}, nil},
		{"task-revoked", expired.ID, map[string]any{"terminated": false, "signum": nil, "expired": true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			e := tap.wait(t, tt.typ, tt.uuid)
			for k, v := range tt.want {
				if diff := cmp.Diff(v, e.fields[k]); diff != "" {
					t.Errorf("%s[%s] (-want +got):\n%s", tt.typ, k, diff)
				}
			}
			for _, k := range append([]string{"hostname", "utcoffset", "pid", "clock", "timestamp"}, tt.present...) {
				if _, ok := e.fields[k]; !ok {
					t.Errorf("%s has no %s: %v", tt.typ, k, e.fields)
				}
			}
			if e.fields["hostname"] != node {
				t.Errorf("hostname %v", e.fields["hostname"])
			}
			if ts, _ := e.fields["timestamp"].(float64); ts < float64(time.Now().Add(-time.Minute).Unix()) {
				t.Errorf("timestamp %v", e.fields["timestamp"])
			}
			rk := strings.ReplaceAll(tt.typ, "-", ".")
			if strings.HasPrefix(tt.typ, "task-") {
				rk = "task.multi" // batched, as a Celery worker does
			}
			if e.channel != "/0.celeryev/"+rk {
				t.Errorf("channel %q, want /0.celeryev/%s", e.channel, rk)
			}
			props := e.env["properties"].(map[string]any)
			di := props["delivery_info"].(map[string]any)
			if di["exchange"] != "celeryev" || di["routing_key"] != rk || props["delivery_mode"] != 1.0 ||
				e.env["headers"].(map[string]any)["hostname"] != node || props["body_encoding"] != "base64" {
				t.Errorf("envelope %v", e.env)
			}
		})
	}

	t.Run("clock increases", func(t *testing.T) {
		r, _ := tap.find("task-received", ok.ID)
		st, _ := tap.find("task-started", ok.ID)
		sc, _ := tap.find("task-succeeded", ok.ID)
		if !(r.fields["clock"].(float64) < st.fields["clock"].(float64) && st.fields["clock"].(float64) < sc.fields["clock"].(float64)) {
			t.Errorf("clocks %v %v %v", r.fields["clock"], st.fields["clock"], sc.fields["clock"])
		}
	})

	t.Run("disable, enable and heartbeat commands", func(t *testing.T) {
		if r := obj(call(t, ctl, node, "disable_events", nil)); r["ok"] != "task events disabled" {
			t.Fatalf("disable_events: %v", r)
		}
		if r := obj(call(t, ctl, node, "disable_events", nil)); r["ok"] != "task events already disabled" {
			t.Fatalf("disable_events again: %v", r)
		}
		quiet := s.send("ctl.add", []any{0, 0}, nil)
		if _, err := wait(t, quiet, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := obj(call(t, ctl, node, "enable_events", nil)); r["ok"] != "task events enabled" {
			t.Fatalf("enable_events: %v", r)
		}
		loud := s.send("ctl.add", []any{0, 1}, nil)
		tap.wait(t, "task-succeeded", loud.ID)
		if _, seen := tap.find("task-received", quiet.ID); seen {
			t.Error("task events were sent while disabled")
		}
		if v := call(t, ctl, node, "heartbeat", nil); v != nil {
			t.Errorf("heartbeat reply %v, want null", v)
		}
		eventually(t, 10*time.Second, "the heartbeat command's worker-heartbeat (freq 5)", func() bool {
			tap.mu.Lock()
			defer tap.mu.Unlock()
			for _, e := range tap.events {
				if e.fields["type"] == "worker-heartbeat" && e.fields["freq"] == 5.0 {
					return true
				}
			}
			return false
		})
	})

	t.Run("worker-offline at stop", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		tap.wait(t, "worker-offline", "")
		if n := tap.count("worker-heartbeat"); n < 2 {
			t.Errorf("%d heartbeats at 100 ms", n)
		}
	})
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.errs) > 0 {
		t.Errorf("undecodable events: %v", tap.errs)
	}
}

func TestWorkerEventsOff(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	tap := tapEvents(t, s)
	w := s.newWorker(cc.WorkerConfig{Hostname: "quiet@ctl", WithoutHeartbeat: true})
	_ = w.Register("ctl.add", addHandler)
	stop := runWorker(t, w)
	res := s.send("ctl.add", []any{1, 2}, nil)
	if _, err := wait(t, res, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Events publish asynchronously, but Run returns only after the dispatcher has flushed; a
	// PING round trip on the tap's server orders everything published before it.
	s.r.Do(0, "PING")
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.events) != 0 {
		t.Fatalf("events without SendEvents and with WithoutHeartbeat: %v", tap.events)
	}
}
