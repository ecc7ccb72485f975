package celerycompat_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// envelopeWith builds a valid envelope for cap.add, lets mutate change it, and returns the bytes.
func envelopeWith(t *testing.T, s *wstack, mutate func(env map[string]any)) []byte {
	t.Helper()
	m, err := s.producer.Build("cap.add", []any{1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.broker.Codec().Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	mutate(env)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestWorkerDeadLettersPoisonAndKeepsServing(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{Codec: cc.Codec{MaxBodySize: 64 << 10}})
	props := func(env map[string]any) map[string]any { return env["properties"].(map[string]any) }
	cases := []struct {
		name   string
		raw    func() []byte
		reason string // substring of the dead-letter reason
	}{
		{"not json", func() []byte { return []byte("\x80garbage{") }, "not a JSON object"},
		{"json array", func() []byte { return []byte(`[1,2,3]`) }, "delivery_tag"},
		{"no delivery tag", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { delete(props(e), "delivery_tag") })
		}, "delivery_tag"},
		{"no routing key", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) {
				delete(props(e)["delivery_info"].(map[string]any), "routing_key")
			})
		}, "routing_key"},
		{"bad base64", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["body"] = "%%%not base64" })
		}, "body"},
		{"pickle", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) {
				e["content-type"] = "application/x-python-serialize"
				e["body"] = b64("\x80\x04\x95cos\nsystem\n")
			})
		}, "application/x-python-serialize"},
		{"yaml", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["content-type"] = "application/x-yaml" })
		}, "application/x-yaml"},
		{"unknown content type", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["content-type"] = "text/x-nonsense" })
		}, "text/x-nonsense"},
		{"two-element body", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["body"] = b64(`[[1, 2], {}]`) })
		}, "body"},
		{"body not json", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["body"] = b64(`[[1, 2], {}, {`) })
		}, "body"},
		{"missing task id", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { delete(e["headers"].(map[string]any), "id") })
		}, "id"},
		{"oversized body", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) {
				e["body"] = b64(`[["` + strings.Repeat("x", 100<<10) + `"], {}, null]`)
			})
		}, "too large"},
		{"unsupported compression", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) {
				e["headers"].(map[string]any)["compression"] = "application/x-lzma"
			})
		}, "application/x-lzma"},
		{"unknown task", func() []byte {
			return envelopeWith(t, s, func(e map[string]any) { e["headers"].(map[string]any)["task"] = "cap.nobody" })
		}, "unknown task cap.nobody"},
	}
	hooks := &cc.Hooks{}
	var rejected, unknown atomic.Int32
	hooks.OnTaskRejected(func(ctx context.Context, e *cc.TaskRejected) error { rejected.Add(1); return nil })
	hooks.OnTaskUnknown(func(ctx context.Context, e *cc.TaskUnknown) error { unknown.Add(1); return nil })
	w := s.newWorker(cc.WorkerConfig{Hooks: hooks})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw()
			s.r.Do(0, "LPUSH", "celery", raw)
			good := s.send("cap.add", []any{i, 1}, nil)
			meta, err := wait(t, good, 10*time.Second)
			if err != nil || num(meta.Result) != float64(i+1) {
				t.Fatalf("task behind the poison message: %v %v", meta, err)
			}
			dls, err := s.broker.DeadLetters(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(dls) != 1 || !strings.Contains(dls[0].Reason, tc.reason) {
				t.Fatalf("newest dead letter %+v, want reason containing %q", dls, tc.reason)
			}
			if string(dls[0].Raw) != string(raw) {
				t.Fatalf("dead letter raw %q, want the original bytes %q", dls[0].Raw, raw)
			}
			if dls[0].Queue != "celery" {
				t.Fatalf("dead letter queue %q, want celery", dls[0].Queue)
			}
		})
	}
	if n := s.llen("celerybridge.deadletter"); n != len(cases) {
		t.Fatalf("%d dead letters, want %d", n, len(cases))
	}
	// acks_late: the last good task's ack follows its stored result, so give it a moment; every
	// message, poison or not, must end acknowledged.
	for deadline := time.Now().Add(10 * time.Second); s.hlen("unacked") != 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages left un-acked", s.hlen("unacked"))
		}
	}
	if rejected.Load() != int32(len(cases)-1) || unknown.Load() != 1 {
		t.Fatalf("task_rejected fired %d times, task_unknown %d; want %d and 1", rejected.Load(), unknown.Load(), len(cases)-1)
	}
}
