package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// DefaultHookRetryTimeout is WorkerConfig.HookRetryTimeout's default.
const DefaultHookRetryTimeout = 30 * time.Second

// ErrSoftTimeLimitExceeded is the cause of a handler's context when the task's soft time limit
// (Celery's soft_time_limit) passes: context.Cause(ctx) returns it and ctx.Err() is
// context.Canceled. A handler that returns either of them, wrapped or not, after the soft limit
// fired fails the task with billiard.exceptions.SoftTimeLimitExceeded, the exception Python
// raises inside the task. A handler that returns another error stores that error, as a Python
// task that catches SoftTimeLimitExceeded and raises something else does.
//
// The hard limit (time_limit) cancels the context too, with cause context.DeadlineExceeded, but
// the worker does not wait for the handler: the task fails with TimeLimitExceeded at once.
var ErrSoftTimeLimitExceeded = errors.New("SoftTimeLimitExceeded")

// errSoftTimeLimit is the name the worker uses internally.
var errSoftTimeLimit = ErrSoftTimeLimitExceeded

func (w *Worker) execLoop(ctx context.Context) {
	for {
		var it *inflight
		select {
		case next, ok := <-w.ready:
			if !ok {
				return
			}
			it = next
		case <-w.ctl.shrink: // pool_shrink
			return
		}
		if w.rateHeld(it) {
			continue
		}
		w.mu.Lock()
		if it.state != stReserved {
			w.mu.Unlock()
			continue
		}
		it.state = stActive
		it.started = w.now()
		w.mu.Unlock()
		w.execute(ctx, it)
	}
}

// outcome is what a handler run produced.
type outcome struct {
	result    any
	err       error
	taskErr   *TaskError
	traceback string
	retry     *RetryError
	state     State
	// terminated is set when the task was revoked with terminate while running.
	terminated *TerminatedError
	// interrupted is set when the handler returned an error after the worker's hard stop (a
	// cold shutdown) cancelled its context: the task did not fail, it was stopped.
	interrupted bool
}

// execute runs one task and performs its effects in Celery's order: publish callbacks and the
// next chain step, store the result, fire the hooks, then acknowledge.
func (w *Worker) execute(ctx context.Context, it *inflight) {
	m, req := it.msg, it.req
	if w.expired(it) {
		w.revoke(ctx, it, RevokedReasonExpired)
		return
	}
	if w.isRevoked(m) {
		w.revoke(ctx, it, RevokedReasonRevoked)
		return
	}
	if w.cfg.AcksEarly {
		w.ackOrLeave(ctx, it)
		w.mu.Lock()
		w.releaseSlot(it)
		w.mu.Unlock()
	}
	waitStarted := func() {} // returns once a STARTED store that has begun is done
	if w.trackStarted(it) && w.cfg.Backend != nil {
		store := func() {
			w.effect(ctx, it, "store STARTED", func(ctx context.Context) error {
				_, err := storeMark(ctx, w.cfg.Backend, m, startedMeta(m.ID, w.pid, w.cfg.Hostname), w.markOptions(it, nil))
				return err
			})
		}
		if d := w.cfg.StartedAfter; d > 0 {
			done := make(chan struct{})
			t := time.AfterFunc(d, func() { defer close(done); store() })
			waitStarted = func() {
				if !t.Stop() {
					<-done
				}
			}
		} else {
			store()
		}
	}
	w.fireOnly(ctx, "task_prerun", it, func() error {
		return w.hooks.prerun.fire(ctx, m.Task, &TaskPrerun{TaskInfo: taskInfo(req)}, w.logPanic)
	})

	w.eventStarted(it)
	out := w.run(ctx, it)
	w.logOutcome(it, &out, w.now().Sub(it.started))
	waitStarted()
	if out.interrupted {
		w.handBack(ctx, it)
		return
	}
	w.stats.count(m.Task)
	if out.terminated != nil {
		w.revokeWith(ctx, it, RevokedReasonTerminated, &out.terminated.Signum)
		return
	}

	var ok bool
	switch {
	case out.retry != nil:
		ok = w.onRetry(ctx, it, &out)
	case out.state == StateFailure:
		ok = w.onFailure(ctx, it, &out)
	default:
		ok = w.onSuccess(ctx, it, &out)
	}
	w.fireOnly(ctx, "task_postrun", it, func() error {
		return w.hooks.postrun.fire(ctx, m.Task, &TaskPostrun{TaskInfo: taskInfo(req), Retval: out.result, State: out.state}, w.logPanic)
	})
	if ok {
		if !w.cfg.AcksEarly {
			// The prefetch slot and the executor are freed as the ack is sent, not when it
			// returns, as a Celery pool process takes its next task while the consumer acks: the
			// next fetch's round trip and the next task overlap the ack's, and acks sent at the
			// same time share one write. The message stays held (refreshed) until the ack is
			// done; Run waits for it before it returns.
			w.mu.Lock()
			w.releaseSlot(it)
			w.mu.Unlock()
			w.acking.Add(1)
			go func() {
				defer w.acking.Done()
				w.ackOrLeave(ctx, it)
				w.finish(it)
			}()
			return
		}
	} else if !w.cfg.AcksEarly {
		// An effect did not happen: put the message back so the task runs again later.
		if err := w.cons.Requeue(context.WithoutCancel(ctx), it.d, true); err != nil {
			w.log.Error("could not requeue after a failed effect; the restore sweep will", "task_id", m.ID, "error", err)
		}
	}
	w.finish(it)
}

func (w *Worker) trackStarted(it *inflight) bool {
	if it.cfg.ignoreResult {
		return false
	}
	if it.cfg.trackStarted != nil {
		return *it.cfg.trackStarted
	}
	return w.cfg.TrackStarted
}

// limits returns the hard and soft time limits: the message header wins over the registration.
func (it *inflight) limits() (hard, soft time.Duration) {
	hard, soft = it.cfg.timeLimit, it.cfg.softTimeLimit
	if tl := it.msg.TimeLimit; tl.Hard != nil && *tl.Hard > 0 {
		hard = time.Duration(*tl.Hard * float64(time.Second))
	}
	if tl := it.msg.TimeLimit; tl.Soft != nil && *tl.Soft > 0 {
		soft = time.Duration(*tl.Soft * float64(time.Second))
	}
	return hard, soft
}

// run calls the handler under the task's time limits, recovering panics.
func (w *Worker) run(ctx context.Context, it *inflight) outcome {
	hard, soft := it.limits()
	taskCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.mu.Lock()
	it.cancel = cancel
	if te := w.takeTerminate(it.msg.ID); te != nil { // revoked with terminate as it started
		cancel(te)
	}
	w.mu.Unlock()
	if soft > 0 {
		t := time.AfterFunc(soft, func() { cancel(errSoftTimeLimit) })
		defer t.Stop()
	}
	type ret struct {
		v   any
		err error
	}
	done := make(chan ret, 1)
	go func() {
		var r ret
		defer func() {
			if p := recover(); p != nil {
				r = ret{err: &PanicError{Value: p, Stack: debug.Stack()}}
			}
			done <- r
		}()
		r.v, r.err = it.handler.ServeTask(taskCtx, it.req)
	}()
	var hardC <-chan time.Time
	if hard > 0 {
		t := time.NewTimer(hard)
		defer t.Stop()
		hardC = t.C
	}
	var r ret
	ctxDone := taskCtx.Done()
wait:
	for {
		select {
		case r = <-done:
			break wait
		case <-hardC:
			cancel(context.DeadlineExceeded)
			te := &TaskError{ExcType: "TimeLimitExceeded", ExcModule: "billiard.exceptions", ExcMessage: []any{hard.Seconds()}}
			return outcome{err: te, taskErr: te, state: StateFailure, traceback: "TimeLimitExceeded: hard time limit (" + hard.String() + ") exceeded"}
		case <-ctxDone:
			// Revoked with terminate: do not wait for a handler that ignores its context (Python
			// kills the process). Soft limits and hard stops keep waiting as before.
			if te := terminatedCause(taskCtx); te != nil {
				return outcome{state: StateRevoked, terminated: te}
			}
			ctxDone = nil
		}
	}
	if te := terminatedCause(taskCtx); te != nil && r.err != nil {
		return outcome{state: StateRevoked, terminated: te}
	}
	if r.err != nil && ctx.Err() != nil && !errors.Is(context.Cause(taskCtx), errSoftTimeLimit) {
		return outcome{err: r.err, interrupted: true} // the worker's hard stop, not a failure
	}
	if r.err == nil {
		return outcome{result: r.v, state: StateSuccess}
	}
	if retry := it.cfg.asRetry(r.err, it.msg.Retries); retry != nil {
		return outcome{err: r.err, retry: retry, state: StateRetry}
	}
	out := outcome{err: r.err, state: StateFailure}
	out.taskErr, out.traceback = w.toTaskError(taskCtx, r.err)
	return out
}

// handBack ends a task interrupted by the worker's hard stop (a cold shutdown) as Celery does:
// no FAILURE stored, no failure hooks, and, with acks_late, its message straight back at the front
// of its queue to run again (on any worker); the result keeps the state it had (STARTED, say).
// With AcksEarly the message was acknowledged when the task started, so the task is not run again.
func (w *Worker) handBack(ctx context.Context, it *inflight) {
	defer w.finish(it)
	m := it.msg
	if w.cfg.AcksEarly {
		w.log.Warn("task interrupted by the worker's hard stop; acknowledged early, so it will not run again",
			"task_id", m.ID, "task", m.Task)
		return
	}
	if err := w.cons.Requeue(context.WithoutCancel(ctx), it.d, true); err != nil {
		w.log.Error("could not hand an interrupted task back; the restore sweep will", "task_id", m.ID, "task", m.Task, "error", err)
		return
	}
	w.log.Info("task interrupted by the worker's hard stop; its message is back on the queue",
		"task_id", m.ID, "task", m.Task, "queue", it.d.Queue)
}

// toTaskError converts a handler error to Celery's exception format with a traceback.
func (w *Worker) toTaskError(taskCtx context.Context, err error) (*TaskError, string) {
	var pe *PanicError
	if errors.As(err, &pe) {
		te := &TaskError{ExcType: "GoPanic", ExcModule: "celerybridge", ExcMessage: []any{fmt.Sprint(pe.Value)}}
		return te, fmt.Sprintf("Traceback (most recent call last):\npanic: %v\n\n%s", pe.Value, pe.Stack)
	}
	if errors.Is(context.Cause(taskCtx), errSoftTimeLimit) && (errors.Is(err, context.Canceled) || errors.Is(err, errSoftTimeLimit)) {
		te := &TaskError{ExcType: "SoftTimeLimitExceeded", ExcModule: "billiard.exceptions", ExcMessage: []any{"SoftTimeLimitExceeded()"}}
		return te, "SoftTimeLimitExceeded: soft time limit exceeded"
	}
	var conv interface{ TaskError() *TaskError }
	var te *TaskError
	if errors.As(err, &conv) {
		te = conv.TaskError()
	} else {
		te = protocol.ErrorToTaskError(err)
	}
	tb := te.Traceback
	if tb == "" {
		tb = "Traceback (most recent call last):\n  (Go handler)\n" + te.ExcType + ": " + err.Error() + "\n"
	}
	return te, tb
}

// ackOrLeave acknowledges, retrying through a Redis outage until the worker is hard-stopped
// (then the message stays un-acked and is restored: the task runs again, nothing is lost).
func (w *Worker) ackOrLeave(ctx context.Context, it *inflight) {
	w.effect(ctx, it, "ack", func(ctx context.Context) error { return w.cons.Ack(ctx, it.d) })
}

// effect runs a broker or backend step, retrying with backoff through Redis outages until it
// succeeds or ctx (the worker's hard stop) ends. It reports success.
func (w *Worker) effect(ctx context.Context, it *inflight, what string, fn func(context.Context) error) bool {
	for {
		err := fn(ctx)
		if err == nil {
			w.outage.ok()
			return true
		}
		if ctx.Err() != nil { // the worker's hard stop: not a failure; the message is handed back
			w.log.Info("task effect abandoned: the worker is stopping", "op", what, "task_id", it.msg.ID, "task", it.msg.Task)
			return false
		}
		if !errors.Is(err, ErrBroker) && !errors.Is(err, ErrBackend) {
			w.log.Error("task effect failed", "op", what, "task_id", it.msg.ID, "task", it.msg.Task, "error", err)
			return false
		}
		d := w.outage.fail(what, err)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return false
		}
	}
}

// fireOnly runs an informational hook (received, prerun, postrun): errors are logged only.
func (w *Worker) fireOnly(_ context.Context, name string, it *inflight, fire func() error) {
	if err := fire(); err != nil {
		task := ""
		if it.msg != nil {
			task = it.msg.Task
		}
		w.log.Error("hook failed", "hook", name, "task", task, "error", err)
	}
}
