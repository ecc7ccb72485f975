package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Per-task log lines, in the words and at the levels of Celery's worker (celery/app/trace.py,
// celery/worker/request.py), each with the stable attributes task_id and task:
//
//	INFO  Task tasks.add[<id>] received
//	INFO  Task tasks.add[<id>] succeeded in 0.00123s: 5
//	ERROR Task tasks.add[<id>] raised unexpected: ValueError('bad')
//	INFO  Task tasks.add[<id>] retry: Retry in 5s: ConnectionError('down')
//	WARN  Soft time limit (1s) exceeded for tasks.add[<id>]
//	ERROR Hard time limit (2s) exceeded for tasks.add[<id>]
//	INFO  Discarding revoked task: tasks.add[<id>]
//
// WorkerConfig.Logger nil keeps the worker silent.

func (w *Worker) logReceived(it *inflight) {
	w.taskLog(slog.LevelInfo, it, func() string { return "Task " + taskName(it.msg) + " received" })
}

// logOutcome logs what a handler run produced. runtime is the handler's run time.
func (w *Worker) logOutcome(it *inflight, out *outcome, runtime time.Duration) {
	m := it.msg
	switch {
	case out.terminated != nil:
		return // logged as revoked
	case out.retry != nil:
		w.taskLog(slog.LevelInfo, it, func() string {
			return "Task " + taskName(m) + " retry: " + retryText(out.retry, it.cfg.defaultRetryDelay)
		})
	case out.state == StateFailure:
		te := out.taskErr
		if te == nil {
			te = protocol.ErrorToTaskError(out.err)
		}
		if te.ExcType == "TimeLimitExceeded" && te.ExcModule == "billiard.exceptions" {
			hard, _ := it.limits()
			w.taskLog(slog.LevelError, it, func() string {
				return fmt.Sprintf("Hard time limit (%s) exceeded for %s", secs(hard), taskName(m))
			})
			return
		}
		if te.ExcType == "SoftTimeLimitExceeded" && te.ExcModule == "billiard.exceptions" {
			_, soft := it.limits()
			w.taskLog(slog.LevelWarn, it, func() string {
				return fmt.Sprintf("Soft time limit (%s) exceeded for %s", secs(soft), taskName(m))
			})
		}
		w.taskLog(slog.LevelError, it, func() string { return "Task " + taskName(m) + " raised unexpected: " + protocol.PyExcRepr(te) },
			slog.Float64("runtime", runtime.Seconds()), slog.String("traceback", out.traceback))
	default:
		w.taskLog(slog.LevelInfo, it, func() string {
			return fmt.Sprintf("Task %s succeeded in %ss: %s", taskName(m), protocol.PyFloatRepr(runtime.Seconds()), protocol.PyRepr(out.result))
		}, slog.Float64("runtime", runtime.Seconds()))
	}
}

func (w *Worker) logRevoked(it *inflight, reason string) {
	what := "revoked"
	if reason == RevokedReasonExpired {
		what = "expired"
	}
	w.taskLog(slog.LevelInfo, it, func() string { return "Discarding " + what + " task: " + taskName(it.msg) })
}

// taskName is "<task>[<id>]", as Celery names a task in its log lines.
func taskName(m *Message) string { return m.Task + "[" + m.ID + "]" }

// taskLog logs msg() at level with the attributes task_id and task. msg is not called when the
// logger drops level: a busy worker with a discarding logger formats nothing (a result's repr
// can cost as much as the task).
func (w *Worker) taskLog(level slog.Level, it *inflight, msg func() string, attrs ...slog.Attr) {
	ctx := context.Background()
	if !w.log.Enabled(ctx, level) {
		return
	}
	attrs = append(attrs, slog.String("task_id", it.msg.ID), slog.String("task", it.msg.Task))
	w.log.LogAttrs(ctx, level, msg(), attrs...)
}

// retryText is str(Retry) as Celery logs it: "Retry in 5s: <reason repr>" or "Retry at <eta>".
func retryText(r *RetryError, def time.Duration) string {
	var when string
	switch {
	case r.ETA != nil:
		when = "at " + r.ETA.UTC().Format(time.RFC3339Nano)
	case r.Countdown != nil:
		when = "in " + secs(*r.Countdown)
	default:
		when = "in " + secs(def)
	}
	if r.Err == nil {
		return "Retry " + when
	}
	reason := r.Err.Error()
	var te *TaskError
	if errors.As(r.Err, &te) {
		reason = protocol.PyExcRepr(te)
	}
	return "Retry " + when + ": " + reason
}

// secs writes d as Python writes a number of seconds: "5s", "0.5s".
func secs(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int64(d/time.Second))
	}
	return protocol.PyFloatRepr(d.Seconds()) + "s"
}
