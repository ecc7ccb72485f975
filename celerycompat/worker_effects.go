package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// resultTuple is how Celery lists a child task in a result's "children": [[id, null], null].
func resultTuple(id string) any { return []any{[]any{id, nil}, nil} }

// sigOptions reads the publish options Celery keeps in a signature's options.
func (w *Worker) sigSendOptions(s Signature, parent *Message) ([]SendOption, string) {
	opts := []SendOption{WithParent(parent.ID, parent.RootID)}
	id, _ := s.Options["task_id"].(string)
	if id != "" {
		opts = append(opts, WithTaskID(id))
	}
	if q, _ := s.Options["queue"].(string); q != "" {
		opts = append(opts, WithQueue(q))
	} else {
		opts = append(opts, WithQueue(DefaultQueue))
	}
	if p, ok := numberOption(s.Options["priority"]); ok {
		opts = append(opts, WithPriority(int(p)))
	}
	if c, ok := numberOption(s.Options["countdown"]); ok && c > 0 {
		opts = append(opts, WithCountdown(time.Duration(c*float64(time.Second))))
	}
	if tl, ok := numberOption(s.Options["time_limit"]); ok && tl > 0 {
		opts = append(opts, WithTimeLimit(time.Duration(tl*float64(time.Second))))
	}
	if tl, ok := numberOption(s.Options["soft_time_limit"]); ok && tl > 0 {
		opts = append(opts, WithSoftTimeLimit(time.Duration(tl*float64(time.Second))))
	}
	if links := signatureList(s.Options["link"]); len(links) > 0 {
		opts = append(opts, WithLink(links...))
	}
	if links := signatureList(s.Options["link_error"]); len(links) > 0 {
		opts = append(opts, WithLinkError(links...))
	}
	return opts, id
}

func numberOption(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case interface{ Float64() (float64, error) }:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// signatureList reads a link/link_error option: a signature or a list of them, as decoded JSON.
func signatureList(v any) []Signature {
	switch x := v.(type) {
	case map[string]any:
		if s, ok := signatureFromMap(x); ok {
			return []Signature{s}
		}
	case []any:
		var out []Signature
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				if s, ok := signatureFromMap(m); ok {
					out = append(out, s)
				}
			}
		}
		return out
	}
	return nil
}

func signatureFromMap(m map[string]any) (Signature, bool) {
	task, _ := m["task"].(string)
	if task == "" {
		return Signature{}, false
	}
	s := Signature{Task: task}
	s.Args, _ = m["args"].([]any)
	s.Kwargs, _ = m["kwargs"].(map[string]any)
	s.Options, _ = m["options"].(map[string]any)
	s.SubtaskType, _ = m["subtask_type"].(string)
	s.Immutable, _ = m["immutable"].(bool)
	return s, true
}

// publishFollowers publishes what follows a successful task: link callbacks, then the next chain
// step, each with the result prepended (unless immutable). It returns the children to record.
func (w *Worker) publishFollowers(ctx context.Context, m *Message, result any) ([]any, error) {
	var children []any
	send := func(s Signature, extra ...SendOption) error {
		args := s.Args
		if !s.Immutable {
			args = append([]any{result}, s.Args...)
		}
		opts, _ := w.sigSendOptions(s, m)
		res, err := w.producer.Send(ctx, s.Task, args, s.Kwargs, append(opts, extra...)...)
		if err != nil {
			return fmt.Errorf("publish %s after %s: %w", s.Task, m.ID, err)
		}
		children = append(children, resultTuple(res.ID))
		return nil
	}
	for _, cb := range m.Embed.Callbacks {
		if err := send(cb); err != nil {
			return nil, err
		}
	}
	if n := len(m.Embed.Chain); n > 0 {
		next, rest := m.Embed.Chain[n-1], m.Embed.Chain[:n-1]
		fwd := make([]Signature, len(rest))
		for i, s := range rest {
			fwd[len(rest)-1-i] = s
		}
		if err := send(next, WithChain(fwd...)); err != nil {
			return nil, err
		}
	}
	return children, nil
}

func (w *Worker) onSuccess(ctx context.Context, it *inflight, out *outcome) bool {
	m := it.msg
	var children []any
	if !w.effect(ctx, it, "publish callbacks", func(ctx context.Context) error {
		var err error
		children, err = w.publishFollowers(ctx, m, out.result)
		return err
	}) {
		return false
	}
	if b := w.cfg.Backend; b != nil && !m.IgnoreResult && !it.cfg.ignoreResult {
		opts := w.markOptions(it, children)
		if !w.effect(ctx, it, "store SUCCESS", func(ctx context.Context) error {
			_, err := storeMark(ctx, b, m, ResultMeta{TaskID: m.ID, Status: StateSuccess, Result: out.result}, opts)
			return err
		}) {
			return false
		}
	}
	if !w.chordPart(ctx, it, StateSuccess, out.result) {
		return false
	}
	w.stats.succeeded.Add(1)
	w.eventSucceeded(it, out.result)
	return fireEffect(ctx, w, it, "task_success", &w.hooks.success, &TaskSuccess{TaskInfo: taskInfo(it.req), Result: out.result})
}

// markOptions are the request details stored with a state: group and parent ids, the extended
// fields (written only with BackendConfig.ResultExtended), and children.
func (w *Worker) markOptions(it *inflight, children []any) []MarkOption {
	opts := []MarkOption{ResultRequest(it.msg, w.cfg.Hostname)}
	if len(children) > 0 {
		opts = append(opts, ResultChildren(children...))
	}
	return opts
}

func (w *Worker) onFailure(ctx context.Context, it *inflight, out *outcome) bool {
	m := it.msg
	if len(m.Embed.Errbacks) > 0 && !w.effect(ctx, it, "publish errbacks", func(ctx context.Context) error {
		for _, eb := range m.Embed.Errbacks {
			args := eb.Args
			if !eb.Immutable {
				args = append([]any{m.ID}, eb.Args...)
			}
			opts, _ := w.sigSendOptions(eb, m)
			if _, err := w.producer.Send(ctx, eb.Task, args, eb.Kwargs, opts...); err != nil {
				return fmt.Errorf("publish errback %s of %s: %w", eb.Task, m.ID, err)
			}
		}
		return nil
	}) {
		return false
	}
	if b := w.cfg.Backend; b != nil {
		if !w.effect(ctx, it, "store FAILURE", func(ctx context.Context) error {
			if _, err := storeMark(ctx, b, m, failureMeta(m.ID, out.taskErr, out.traceback), w.markOptions(it, nil)); err != nil {
				return err
			}
			// Celery also fails the rest of the chain, so that waiters on it do not hang.
			for _, s := range m.Embed.Chain {
				if id, _ := s.Options["task_id"].(string); id != "" {
					if _, err := storeMark(ctx, b, nil, failureMeta(id, out.taskErr, out.traceback), nil); err != nil {
						return err
					}
				}
			}
			return nil
		}) {
			return false
		}
	}
	if !w.chordPart(ctx, it, StateFailure, out.taskErr) {
		return false
	}
	w.stats.failed.Add(1)
	w.eventFailed("task-failed", it, out.taskErr, out.traceback)
	return fireEffect(ctx, w, it, "task_failure", &w.hooks.failure, &TaskFailure{TaskInfo: taskInfo(it.req), Exception: out.err, Traceback: out.traceback})
}

// onRetry re-publishes the task (same id, retries+1, new ETA), stores RETRY and fires task_retry;
// past max retries the task fails with MaxRetriesExceededError.
func (w *Worker) onRetry(ctx context.Context, it *inflight, out *outcome) bool {
	m, r := it.msg, out.retry
	maxRetries := it.cfg.maxRetries
	if r.MaxRetries != nil {
		maxRetries = *r.MaxRetries
	}
	if maxRetries >= 0 && m.Retries >= maxRetries {
		te := maxRetriesError(it.req, r.Err)
		out.taskErr, out.err, out.state, out.retry = te, te, StateFailure, nil
		out.traceback = "Traceback (most recent call last):\n  (Go handler)\ncelery.exceptions.MaxRetriesExceededError: " + te.Message() + "\n"
		return w.onFailure(ctx, it, out)
	}
	eta := w.now().Add(it.cfg.defaultRetryDelay)
	switch {
	case r.ETA != nil:
		eta = *r.ETA
	case r.Countdown != nil:
		eta = w.now().Add(*r.Countdown)
	}
	next := *m
	next.Retries = m.Retries + 1
	next.ETA = &eta
	next.DeliveryTag = uuid.NewString()
	next.Redelivered, next.DeliveryInfo.Redelivered = false, false
	if next.ParentID == "" {
		next.ParentID = m.ID
	}
	if !w.effect(ctx, it, "publish retry", func(ctx context.Context) error { return w.transport.PublishBatch(ctx, []*Message{&next})[0] }) {
		return false
	}
	var te *TaskError
	tb := ""
	if r.Err != nil {
		te, tb = w.toTaskError(ctx, r.Err)
	}
	if b := w.cfg.Backend; b != nil {
		opts := append(w.markOptions(it, nil), ResultChildren(resultTuple(m.ID)))
		if !w.effect(ctx, it, "store RETRY", func(ctx context.Context) error {
			_, err := storeMark(ctx, b, m, retryMeta(m.ID, te, tb), opts)
			return err
		}) {
			return false
		}
	}
	w.stats.retried.Add(1)
	w.eventFailed("task-retried", it, te, tb)
	return fireEffect(ctx, w, it, "task_retry", &w.hooks.retry, &TaskRetry{TaskInfo: taskInfo(it.req), Reason: r})
}

// chordPart does the chord bookkeeping of a header task and, when it completes the chord,
// publishes the body with the ordered results.
func (w *Worker) chordPart(ctx context.Context, it *inflight, state State, result any) bool {
	m := it.msg
	if m.Embed.Chord == nil || m.Group == "" || w.cfg.Backend == nil {
		return true
	}
	b := redisBackend(w.cfg.Backend)
	if b == nil {
		// Celery's rpc backend ignores on_chord_part_return too; the body is never sent.
		w.log.Warn("chord part not counted: the result backend keeps no chords", "task_id", m.ID, "group_id", m.Group,
			"error", ErrChordUnsupported)
		return true
	}
	body := *m.Embed.Chord
	return w.effect(ctx, it, "chord bookkeeping", func(ctx context.Context) error {
		ready, results, err := b.ChordPartReturn(ctx, m.Group, m.GroupIndex, m.ID, state, result)
		var ce *ChordError
		if errors.As(err, &ce) {
			if id, _ := body.Options["task_id"].(string); id != "" {
				te := &TaskError{ExcType: "ChordError", ExcModule: "celery.exceptions", ExcMessage: []any{ce.Error()}}
				if _, err := b.MarkFailure(ctx, id, te, ""); err != nil {
					return err
				}
			}
			return b.CleanupChord(ctx, m.Group)
		}
		if err != nil || !ready {
			return err
		}
		args := body.Args
		if !body.Immutable {
			args = append([]any{results}, body.Args...)
		}
		opts, _ := w.sigSendOptions(body, m)
		if _, err := w.producer.Send(ctx, body.Task, args, body.Kwargs, opts...); err != nil {
			return err
		}
		return b.CleanupChord(ctx, m.Group)
	})
}

// reject handles a message that cannot be decoded: dead-letter it with the reason and fire
// task_rejected. Never dropped silently, never retried forever.
func (w *Worker) reject(ctx context.Context, it *inflight) {
	d := it.d
	defer w.finish(it)
	reason := d.Reason
	if reason == "" && d.DecodeErr != nil {
		reason = d.DecodeErr.Error()
	}
	if !d.Poisoned {
		if err := w.cons.DeadLetter(ctx, d, reason); err != nil {
			w.log.Error("could not dead-letter an undecodable message; it stays un-acked", "queue", d.Queue, "error", err)
			return
		}
	}
	w.stats.rejected.Add(1)
	if d.Message != nil {
		w.eventRejected(d.Message.ID, false)
	}
	w.log.Warn("message dead-lettered", "queue", d.Queue, "reason", reason)
	w.fireOnly(ctx, "task_rejected", it, func() error {
		return w.hooks.rejected.fire(ctx, "", &TaskRejected{Raw: d.Raw, Queue: d.Queue, Err: d.DecodeErr}, w.logPanic)
	})
}

// unknown handles a task no handler is registered for, per the worker's policy.
func (w *Worker) unknown(ctx context.Context, it *inflight) {
	d, m := it.d, it.msg
	defer w.finish(it)
	if w.cfg.UnknownTasks == UnknownRequeue {
		if err := w.cons.Requeue(ctx, d, true); err != nil {
			w.log.Error("could not requeue an unknown task", "task", m.Task, "task_id", m.ID, "error", err)
		}
		return
	}
	err := fmt.Errorf("task %q is not registered on %s", m.Task, w.cfg.Hostname)
	if b := w.cfg.Backend; b != nil {
		te := &TaskError{ExcType: "NotRegistered", ExcModule: "celery.exceptions", ExcMessage: []any{m.Task}}
		if _, serr := storeMark(ctx, b, m, failureMeta(m.ID, te, ""), nil); serr != nil {
			w.log.Error("could not store NotRegistered", "task_id", m.ID, "error", serr)
		}
	}
	if derr := w.cons.DeadLetter(ctx, d, "unknown task "+m.Task); derr != nil {
		w.log.Error("could not dead-letter an unknown task; it stays un-acked", "task", m.Task, "task_id", m.ID, "error", derr)
		return
	}
	w.stats.rejected.Add(1)
	w.eventFailed("task-failed", it, nil, "")
	w.log.Warn("unknown task dead-lettered", "task", m.Task, "task_id", m.ID)
	w.fireOnly(ctx, "task_unknown", it, func() error {
		return w.hooks.unknown.fire(ctx, "", &TaskUnknown{Raw: d.Raw, Message: m, Task: m.Task, TaskID: m.ID, Err: err}, w.logPanic)
	})
}

// revoke stores REVOKED with reason, fires task_revoked, and acknowledges.
func (w *Worker) revoke(ctx context.Context, it *inflight, reason string) {
	w.revokeWith(ctx, it, reason, nil)
}

// revokeWith is revoke with the signal number of a terminate.
func (w *Worker) revokeWith(ctx context.Context, it *inflight, reason string, signum *int) {
	m := it.msg
	defer w.finish(it)
	if b := w.cfg.Backend; b != nil {
		if !w.effect(ctx, it, "store REVOKED", func(ctx context.Context) error {
			_, err := storeMark(ctx, b, m, revokedMeta(m.ID, reason), w.markOptions(it, nil))
			return err
		}) {
			return
		}
	}
	w.stats.revoked.Add(1)
	w.logRevoked(it, reason)
	if !fireEffect(ctx, w, it, "task_revoked", &w.hooks.revoked, &TaskRevoked{TaskInfo: taskInfo(it.req), Expired: reason == RevokedReasonExpired, Terminated: reason == RevokedReasonTerminated, Signum: signum}) {
		_ = w.cons.Requeue(context.WithoutCancel(ctx), it.d, true)
		return
	}
	w.eventRevoked(it, reason == RevokedReasonTerminated, signum, reason == RevokedReasonExpired)
	w.ackOrLeave(ctx, it)
}
