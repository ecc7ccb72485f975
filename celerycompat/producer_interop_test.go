package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestPythonWorkerRunsGoMessages: what the Go producer writes is run by an unmodified Python
// Celery worker of each version, with the expected outcome.
func TestPythonWorkerRunsGoMessages(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			s.startPyWorker(peer, []string{"CAP_ACKS_LATE=1"}, "--prefetch", "4")
			ctx := context.Background()
			big := strings.Repeat("é", 512<<10) // 1 MiB of UTF-8
			nested := map[string]any{"text": "中文 🎉 \"quotes\" \\ </script>", "deep": map[string]any{"list": []any{1, 2.5, nil, true, map[string]any{"k": "v"}}}}
			linkID := "2222bbbb-0000-0000-0000-00000000000" + string(peer[0])
			cb := cc.NewSignature("cap.add", []any{10}, nil)
			cb.Options["task_id"] = linkID
			onErr := cc.NewSignature("cap.on_err", nil, nil)
			type tc struct {
				name  string
				send  func() (*cc.AsyncResult, error)
				check func(t *testing.T, meta *cc.ResultMeta, err error)
			}
			value := func(want any) func(t *testing.T, meta *cc.ResultMeta, err error) {
				return func(t *testing.T, meta *cc.ResultMeta, err error) {
					t.Helper()
					if err != nil || fmt.Sprint(meta.Result) != fmt.Sprint(want) {
						t.Errorf("got %v %v, want %v", meta.Result, err, want)
					}
				}
			}
			send := func(name string, args []any, kwargs map[string]any, opts ...cc.SendOption) func() (*cc.AsyncResult, error) {
				return func() (*cc.AsyncResult, error) { return s.producer.Send(ctx, name, args, kwargs, opts...) }
			}
			cases := []tc{
				{"plain", send("cap.add", []any{2, 3}, nil), value(5)},
				{"non-ascii nested kwargs", send("cap.echo", nil, nested), func(t *testing.T, meta *cc.ResultMeta, err error) {
					m, _ := meta.Result.(map[string]any)
					if err != nil || fmt.Sprint(m["kwargs"]) != fmt.Sprint(nested) {
						t.Errorf("echo: %v %v", meta.Result, err)
					}
				}},
				{"1 MiB payload", send("cap.echo", []any{big}, nil), func(t *testing.T, meta *cc.ResultMeta, err error) {
					m, _ := meta.Result.(map[string]any)
					args, _ := m["args"].([]any)
					if err != nil || len(args) != 1 || args[0] != big {
						t.Errorf("1 MiB echo came back wrong (err %v)", err)
					}
				}},
				{"expired", send("cap.add", []any{1, 1}, nil, cc.WithExpires(time.Now().Add(-time.Minute))), func(t *testing.T, meta *cc.ResultMeta, err error) {
					var te *cc.TaskError
					if meta.Status != cc.StateRevoked || !errors.As(err, &te) || te.ExcType != "TaskRevokedError" {
						t.Errorf("expired: %s %v, want REVOKED TaskRevokedError", meta.Status, err)
					}
				}},
				{"link", send("cap.add", []any{1, 2}, nil, cc.WithLink(cb)), func(t *testing.T, meta *cc.ResultMeta, err error) {
					value(3)(t, meta, err)
					m, err := wait(t, s.backend.AsyncResult(linkID), 20*time.Second)
					if err != nil || num(m.Result) != 13 {
						t.Errorf("link callback: %v %v, want 13", m.Result, err)
					}
				}},
				{"link_error", send("cap.fail", nil, nil, cc.WithLinkError(onErr)), func(t *testing.T, meta *cc.ResultMeta, err error) {
					var te *cc.TaskError
					if !errors.As(err, &te) || te.ExcType != "MyError" {
						t.Errorf("fail: %v", err)
					}
				}},
				{"chain", func() (*cc.AsyncResult, error) {
					return s.producer.SendChain(ctx, []cc.Signature{
						cc.NewSignature("cap.add", []any{1, 2}, nil), cc.NewSignature("cap.add", []any{10}, nil),
						cc.NewSignature("cap.add", []any{100}, nil)})
				}, value(113)},
				{"protocol 1", send("cap.add", []any{20, 22}, nil, cc.WithProtocol(1)), value(42)},
				{"custom headers", send("cap.record", []any{"h"}, nil, cc.WithHeaders(map[string]any{"x-custom": "hello"})), func(t *testing.T, meta *cc.ResultMeta, err error) {
					m, _ := meta.Result.(map[string]any)
					h, _ := m["headers"].(map[string]any)
					if err != nil || h["x-custom"] != "hello" {
						t.Errorf("record: %v %v, want headers x-custom=hello", meta.Result, err)
					}
				}},
				{"countdown", send("cap.record", []any{"cd"}, nil, cc.WithCountdown(time.Second)), func(t *testing.T, meta *cc.ResultMeta, err error) {
					m, _ := meta.Result.(map[string]any)
					if err != nil || m["eta"] == nil {
						t.Errorf("countdown: %v %v, want an eta", meta.Result, err)
					}
				}},
				{"eta", send("cap.record", []any{"eta"}, nil, cc.WithETA(time.Now().Add(time.Second))), func(t *testing.T, meta *cc.ResultMeta, err error) {
					m, _ := meta.Result.(map[string]any)
					if err != nil || m["eta"] == nil {
						t.Errorf("eta: %v %v, want an eta", meta.Result, err)
					}
				}},
			}
			started := time.Now()
			results := make([]*cc.AsyncResult, len(cases))
			for i, c := range cases {
				r, err := c.send()
				if err != nil {
					t.Fatalf("%s: send: %v", c.name, err)
				}
				results[i] = r
			}
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					meta, err := wait(t, results[i], 30*time.Second)
					c.check(t, meta, err)
				})
			}
			// countdown/eta tasks must not have run before their time.
			for _, r := range s.ranRecords() {
				if args, _ := r["args"].([]any); len(args) == 1 && (args[0] == "cd" || args[0] == "eta") {
					if ran := time.Unix(0, int64(r["time"].(float64)*1e9)); ran.Sub(started) < 900*time.Millisecond {
						t.Errorf("%v ran %v after sending, before its ETA", args[0], ran.Sub(started))
					}
				}
			}
			// The errback ran with the failed task's id.
			eventually(t, 20*time.Second, "errback", func() bool {
				for _, r := range s.ranRecords() {
					if r["task"] == "cap.on_err" {
						return true
					}
				}
				return false
			})
		})
	}
}

// TestPythonWorkerServesPriorityZeroFirst: Go publishes to the priority lists as kombu does; the
// Python worker, started afterwards, takes priority 0 first.
func TestPythonWorkerServesPriorityZeroFirst(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			for _, p := range []int{9, 6, 3, 0} {
				s.send("cap.record", []any{p}, nil, cc.WithPriority(p))
			}
			s.startPyWorker(peer, []string{"CAP_ACKS_LATE=1"}, "--prefetch", "1")
			eventually(t, 30*time.Second, "4 tasks", func() bool { return len(s.ranRecords()) == 4 })
			var order []string
			for _, r := range s.ranRecords() {
				order = append(order, fmt.Sprint(r["args"].([]any)[0]))
			}
			if got := strings.Join(order, ","); got != "0,3,6,9" {
				t.Fatalf("Python ran priorities %s, want 0,3,6,9", got)
			}
		})
	}
}

// TestGoDecodesLivePythonMessages: every message kind the real Python producer of each version
// writes decodes in Go to the values it was sent with.
func TestGoDecodesLivePythonMessages(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			s := newWStack(t, cc.BrokerConfig{})
			eta := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			specs := []map[string]any{
				{"name": "cap.add", "args": []any{2, 3}, "task_id": "dec-1"},
				{"name": "cap.echo", "kwargs": map[string]any{"t": "中文 🎉"}, "task_id": "dec-2"},
				{"name": "cap.echo", "kwargs": map[string]any{"n": map[string]any{"a": []any{1, nil}}}, "task_id": "dec-3"},
				{"name": "cap.add", "args": []any{1, 1}, "countdown": 60, "expires": 120, "task_id": "dec-4"},
				{"name": "cap.add", "args": []any{1, 1}, "eta": eta.Format(time.RFC3339), "task_id": "dec-5"},
				{"name": "cap.add", "args": []any{1, 1}, "priority": 5, "task_id": "dec-6"},
				{"name": "cap.add", "args": []any{1, 1}, "headers": map[string]any{"x-custom": "hello"}, "task_id": "dec-7"},
				{"name": "cap.add", "args": []any{1, 1}, "time_limit": 30, "soft_time_limit": 20, "task_id": "dec-8"},
				{"name": "cap.add", "args": []any{1, 2}, "link": map[string]any{"name": "cap.add", "args": []any{5}}, "task_id": "dec-9"},
			}
			s.pySend(peer, specs)
			s.pySend(peer, map[string]any{"name": "cap.add", "args": []any{4, 4}, "protocol": 1, "task_id": "dec-p1"})
			msgs := map[string]*cc.Message{}
			for _, list := range []string{"celery", "celery\x06\x163"} {
				raws, err := redis.ByteSlices(s.r.Do(0, "LRANGE", list, 0, -1), nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, raw := range raws {
					m, err := s.broker.Codec().Decode(raw)
					if err != nil {
						t.Fatalf("decode %s message: %v\n%s", list, err, raw)
					}
					msgs[m.ID] = m
				}
			}
			get := func(id string) *cc.Message {
				m := msgs[id]
				if m == nil {
					t.Fatalf("message %s not found", id)
				}
				return m
			}
			if m := get("dec-1"); m.Task != "cap.add" || fmt.Sprint(m.Args) != "[2 3]" || m.DeliveryInfo.RoutingKey != "celery" || m.DeliveryTag == "" {
				t.Errorf("plain: %+v", m)
			}
			if m := get("dec-2"); m.Kwargs["t"] != "中文 🎉" {
				t.Errorf("unicode kwargs %v", m.Kwargs)
			}
			if m := get("dec-3"); fmt.Sprint(m.Kwargs) != "map[n:map[a:[1 <nil>]]]" {
				t.Errorf("nested kwargs %v", m.Kwargs)
			}
			if m := get("dec-4"); m.ETA == nil || m.Expires == nil || m.Expires.Sub(*m.ETA) != time.Minute || m.Expiration == "" {
				t.Errorf("countdown/expires: eta %v expires %v expiration %q", m.ETA, m.Expires, m.Expiration)
			}
			if m := get("dec-5"); m.ETA == nil || !m.ETA.Equal(eta) {
				t.Errorf("eta %v, want %v", m.ETA, eta)
			}
			if m := get("dec-6"); m.Priority != 5 {
				t.Errorf("priority %d", m.Priority)
			}
			if m := get("dec-7"); string(m.ExtraHeaders["x-custom"]) != `"hello"` {
				t.Errorf("custom headers %v", m.ExtraHeaders)
			}
			if m := get("dec-8"); m.TimeLimit.Hard == nil || *m.TimeLimit.Hard != 30 || m.TimeLimit.Soft == nil || *m.TimeLimit.Soft != 20 {
				t.Errorf("timelimit %+v", m.TimeLimit)
			}
			if m := get("dec-9"); len(m.Embed.Callbacks) != 1 || m.Embed.Callbacks[0].Task != "cap.add" {
				t.Errorf("link %+v", m.Embed)
			}
			if m := get("dec-p1"); m.Protocol != 1 || fmt.Sprint(m.Args) != "[4 4]" {
				t.Errorf("protocol 1: %+v", m)
			}
		})
	}
}
