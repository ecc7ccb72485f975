package celerycompat

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// mingleTimeout is how long a starting worker collects hello replies (Celery's Mingle uses
// inspect(timeout=1.0)).
const mingleTimeout = time.Second

// mingle is Celery's Mingle bootstep (celery/worker/consumer/mingle.py): before taking tasks, the
// worker sends hello with its node name and revoked ids to the other workers in the mailbox,
// merges the revoked ids each one answers with, and adjusts its clock to theirs (or moves it
// forward when a reply has no clock). Celery always waits the whole second; this worker
// addresses the nodes bound to the mailbox by name and stops as soon as each has answered, and
// does not wait at all when it is alone. Failures are logged, never fatal, as in Celery.
func (w *Worker) mingle(ctx context.Context) {
	others, err := w.mailboxNodes(ctx)
	if err != nil {
		w.log.Warn("mingle: could not list the other workers", "error", err)
		return
	}
	if len(others) == 0 {
		w.log.Info("mingle: all alone")
		return
	}
	w.log.Info("mingle: searching for neighbors")
	ctl, err := NewControl(w.broker, ControlConfig{Logger: w.log, Now: w.now})
	if err != nil {
		w.log.Warn("mingle: hello failed", "error", err)
		return
	}
	ctl.clock.adjust(w.ctl.clock.value())
	revoked := stringsAny(w.ctl.revoked.list())
	replies, err := ctl.Broadcast(ctx, "hello", map[string]any{"from_node": w.cfg.Hostname, "revoked": revoked},
		BroadcastTimeout(mingleTimeout), BroadcastTo(others...))
	if err != nil && len(replies) == 0 {
		w.log.Warn("mingle: hello failed", "error", err)
		return
	}
	synced := 0
	for node, raw := range replies {
		if node == w.cfg.Hostname {
			continue
		}
		var reply struct {
			Clock   *json.Number `json:"clock"`
			Revoked any          `json:"revoked"`
		}
		if json.Unmarshal(raw, &reply) != nil || string(raw) == "null" {
			continue // an empty reply: Celery skips those too
		}
		synced++
		if clock, err := reply.Clock.Int64(); reply.Clock != nil && err == nil {
			w.ctl.clock.adjust(clock)
		} else {
			w.ctl.clock.forward()
		}
		w.ctl.revoked.merge(reply.Revoked)
	}
	if synced == 0 {
		w.log.Info("mingle: all alone")
		return
	}
	w.log.Info("mingle: sync complete", "nodes", synced)
}

// mailboxNodes lists the other nodes bound to the control mailbox (their "<node>.celery.pidbox"
// queues in _kombu.binding.celery.pidbox).
func (w *Worker) mailboxNodes(ctx context.Context) ([]string, error) {
	c, err := w.broker.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	members, err := redis.Strings(redis.DoContext(c, ctx, "SMEMBERS", w.broker.Keys().Binding(pidboxExchange)))
	if err != nil {
		return nil, err
	}
	var nodes []string
	for _, m := range members {
		parts := strings.Split(m, Sep)
		node, ok := strings.CutSuffix(parts[len(parts)-1], ".celery.pidbox")
		if ok && node != "" && node != w.cfg.Hostname {
			nodes = append(nodes, node)
		}
	}
	return nodes, nil
}
