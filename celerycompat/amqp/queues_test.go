package amqp

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// pyQueue sends cap.add through testdata/pyqueue.py and returns the task id.
func pyQueue(t *testing.T, peer celerytest.Peer, url string, args ...string) string {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "pyqueue.py"))
	if err != nil {
		t.Fatal(err)
	}
	out := celerytest.RunPython(t, peer, []string{"BROKER_URL=" + url, "BACKEND_URL=disabled://"}, 60*time.Second, script, args...)
	var r struct{ ID string }
	if err := json.Unmarshal(out, &r); err != nil || r.ID == "" {
		t.Fatalf("pyqueue.py: %v\n%s", err, out)
	}
	return r.ID
}

// TestQueueArgumentsShared: a queue declared by Go with x-max-priority or x-queue-type is
// re-declared by Python Celery with the same settings without PRECONDITION_FAILED (the argument
// types match py-amqp's), and the other way round; messages flow both ways.
func TestQueueArgumentsShared(t *testing.T) {
	for _, peer := range celerytest.Peers {
		for _, tc := range []struct {
			name string
			cfg  Config
			py   []string
		}{
			{"max-priority", Config{QueueMaxPriority: 10}, []string{"--max-priority", "10", "--priority", "7"}},
			{"quorum", Config{Queues: []Queue{{Name: "qq", Arguments: map[string]any{"x-queue-type": "quorum"}}}}, []string{"--queue-type", "quorum"}},
		} {
			t.Run(fmt.Sprintf("%s/%s", peer, tc.name), func(t *testing.T) {
				q := "celery"
				if len(tc.cfg.Queues) > 0 {
					q = tc.cfg.Queues[0].Name
				}
				tr, v := newTransport(t, tc.cfg)
				goFirst := taskMsg(q, 1)
				publish(t, tr, goFirst) // Go declares the queue
				pyID := pyQueue(t, peer, v.URL(), append([]string{"--queue", q}, tc.py...)...)
				c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{q}, Prefetch: 4})
				got := map[string]bool{}
				for _, d := range next(t, c, 2, 20*time.Second) {
					if d.DecodeErr != nil {
						t.Fatal(d.DecodeErr)
					}
					got[d.Message.ID] = true
					if err := c.Ack(testCtx(t), d); err != nil {
						t.Fatal(err)
					}
				}
				if !got[goFirst.ID] || !got[pyID] {
					t.Fatalf("consumed %v, want %s and %s", got, goFirst.ID, pyID)
				}
				row := v.List(t, "list_queues", "name", "arguments", "type")
				if tc.name == "quorum" && !strings.Contains(jsonText(row), `"quorum"`) {
					t.Errorf("queue is not a quorum queue: %v", row)
				}

				// Python first on a fresh vhost, then Go declares and consumes.
				v2 := newVHost(t)
				pyID = pyQueue(t, peer, v2.URL(), append([]string{"--queue", q}, tc.py...)...)
				cfg := tc.cfg
				cfg.URL = v2.URL()
				tr2, err := New(testCtx(t), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer tr2.Close()
				c2 := consume(t, tr2, celerycompat.ConsumerConfig{Queues: []string{q}, Prefetch: 4})
				d := next(t, c2, 1, 20*time.Second)[0]
				if d.DecodeErr != nil || d.Message.ID != pyID {
					t.Fatalf("got %+v (%v), want %s", d.Message, d.DecodeErr, pyID)
				}
				if err := c2.Ack(testCtx(t), d); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestPublishUnknownExchange: a message for an exchange that does not exist gets an error (the
// broker closes the channel and never confirms it), and the next publish works.
func TestPublishUnknownExchange(t *testing.T) {
	tr, _ := newTransport(t, Config{})
	bad := taskMsg("celery", 1)
	bad.DeliveryInfo.Exchange = "no-such-exchange"
	errs := tr.PublishBatch(testCtx(t), []*celerycompat.Message{bad})
	if !errors.Is(errs[0], celerycompat.ErrBroker) {
		t.Fatalf("publish to a missing exchange: %v, want ErrBroker", errs[0])
	}
	publish(t, tr, taskMsg("celery", 2))
}
