package celerycompat

import (
	"context"
	"errors"
	"time"
)

// BeforeAck marks a task_success, task_failure, task_retry or task_revoked hook whose effect
// must happen before the message is acknowledged, as a callback outbox's enqueue must:
//
//	hooks.OnTaskSuccess(celerycompat.BeforeAck(enqueueCallback), "tasks.process_task")
//
// When fn returns an error the worker calls it again with backoff for up to
// WorkerConfig.HookRetryTimeout (the other hooks are not called again); if it still fails, the
// message is put back unacknowledged, so the task runs again later and the hook with it: the
// effect is delayed or repeated, never skipped. An error wrapping ErrHookPermanent is logged and
// not retried. Hooks not marked (and BeforeAck hooks of the other events) behave like Celery's
// signal receivers: their errors are logged and the task is acknowledged.
func BeforeAck[E any](fn HookFunc[E]) HookFunc[E] {
	return func(ctx context.Context, e *E) error {
		if err := fn(ctx, e); err != nil {
			return &beforeAckError{err: err}
		}
		return nil
	}
}

// beforeAckError carries the error of a BeforeAck hook to the worker.
type beforeAckError struct{ err error }

func (e *beforeAckError) Error() string { return e.err.Error() }
func (e *beforeAckError) Unwrap() error { return e.err }

// fireEffect fires an effect event (success, failure, retry, revoked) and reports whether every
// BeforeAck hook finally succeeded. Plain hook errors are logged once. Failed BeforeAck hooks
// alone are called again, with backoff, until HookRetryTimeout.
func fireEffect[E any](ctx context.Context, w *Worker, it *inflight, name string, l *hookList[E], ev *E) bool {
	p := l.entries.Load()
	if p == nil {
		return true
	}
	task := it.msg.Task
	pending := make([]HookFunc[E], 0, 1)
	for _, h := range *p {
		if h.senders != nil && !h.senders[task] {
			continue
		}
		if callEffect(ctx, w, it, name, h.fn, ev) {
			pending = append(pending, h.fn)
		}
	}
	deadline := time.Now().Add(w.cfg.HookRetryTimeout)
	delay := 50 * time.Millisecond
	for len(pending) > 0 {
		if time.Now().Add(delay).After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return false
		}
		delay = min(delay*2, 2*time.Second)
		still := pending[:0]
		for _, fn := range pending {
			if callEffect(ctx, w, it, name, fn, ev) {
				still = append(still, fn)
			}
		}
		pending = still
	}
	return true
}

// callEffect calls one effect hook and reports whether it must be called again: a BeforeAck
// hook's error that does not wrap ErrHookPermanent. Every error and panic is logged.
func callEffect[E any](ctx context.Context, w *Worker, it *inflight, name string, fn HookFunc[E], ev *E) bool {
	err, panicked := callHook(ctx, fn, ev)
	if panicked != nil {
		w.logPanic(panicked)
		return false
	}
	if err == nil {
		return false
	}
	var ba *beforeAckError
	if errors.As(err, &ba) && !errors.Is(err, ErrHookPermanent) {
		w.log.Warn("hook failed; the ack waits for it", "hook", name, "task_id", it.msg.ID, "task", it.msg.Task, "error", err)
		return true
	}
	w.log.Error("hook failed", "hook", name, "task_id", it.msg.ID, "task", it.msg.Task, "error", err)
	return false
}
