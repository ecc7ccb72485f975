package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"
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
	opts := []BroadcastOption{BroadcastTimeout(mingleTimeout)}
	others, err := w.mailboxNodes(ctx)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		// The broker cannot list the mailbox (RabbitMQ): greet everyone and wait the whole
		// second, as Celery does.
	case err != nil:
		w.log.Warn("mingle: could not list the other workers", "error", err)
		return
	case len(others) == 0:
		w.log.Info("mingle: all alone")
		return
	default:
		opts = append(opts, BroadcastTo(others...))
	}
	w.log.Info("mingle: searching for neighbors")
	ctl, err := NewControl(w.transport, ControlConfig{Logger: w.log, Now: w.now})
	if err != nil {
		w.log.Warn("mingle: hello failed", "error", err)
		return
	}
	ctl.clock.adjust(w.ctl.clock.value())
	revoked := stringsAny(w.ctl.revoked.list())
	replies, err := ctl.Broadcast(ctx, "hello", map[string]any{"from_node": w.cfg.Hostname, "revoked": revoked}, opts...)
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

// mailboxNodes lists the other nodes bound to the control mailbox.
func (w *Worker) mailboxNodes(ctx context.Context) ([]string, error) {
	nodes, err := w.fanout.MailboxNodes(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(nodes, func(n string) bool { return n == w.cfg.Hostname }), nil
}
