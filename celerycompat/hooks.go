package celerycompat

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Hook events mirror Celery's signals (celery/signals.py) and carry the arguments Celery passes,
// with Go names. Every task event embeds TaskInfo, so e.TaskID, e.Task, e.Args, e.Kwargs and
// e.Request read the same way on all of them.

// TaskInfo is what every task event says about its task: the id, the name (Celery's sender),
// the arguments and the full request.
type TaskInfo struct {
	TaskID, Task string
	Args         []any
	Kwargs       map[string]any
	Request      *Request
}

// taskInfo builds the TaskInfo of a request.
func taskInfo(req *Request) TaskInfo {
	if req == nil {
		return TaskInfo{}
	}
	return TaskInfo{TaskID: req.ID, Task: req.Task, Args: req.Args, Kwargs: req.Kwargs, Request: req}
}

// TaskReceived mirrors task_received: a message was accepted (after the revoke and expiry checks).
type TaskReceived struct{ TaskInfo }

// TaskPrerun mirrors task_prerun: the handler is about to run.
type TaskPrerun struct{ TaskInfo }

// TaskPostrun mirrors task_postrun (sent whatever the outcome).
type TaskPostrun struct {
	TaskInfo
	Retval any
	State  State
}

// TaskSuccess mirrors task_success; it fires after the result is stored.
type TaskSuccess struct {
	TaskInfo
	Result any
}

// TaskFailure mirrors task_failure; it fires after the failure is stored.
type TaskFailure struct {
	TaskInfo
	Exception error
	Traceback string
}

// TaskRetry mirrors task_retry: the task asked to be retried and its next run is published.
type TaskRetry struct {
	TaskInfo
	Reason error
}

// TaskRevoked mirrors task_revoked: revoked before it ran, expired, or terminated while running.
type TaskRevoked struct {
	TaskInfo
	Terminated bool
	Signum     *int
	Expired    bool
}

// TaskRejected mirrors task_rejected: a message that could not be decoded or was invalid.
type TaskRejected struct {
	Raw   []byte
	Queue string
	Err   error
}

// TaskUnknown mirrors task_unknown: a message for a task this worker does not know. TaskID and
// Task are named as in TaskInfo; there is no Request, the task never reaches a handler.
type TaskUnknown struct {
	Raw     []byte
	Message *Message
	TaskID  string
	Task    string
	Err     error
}

// WorkerReady mirrors worker_ready; WorkerShutdown mirrors worker_shutdown.
type (
	WorkerReady    struct{ Hostname string }
	WorkerShutdown struct{ Hostname string }
)

// HookFunc handles one event. Like a Celery signal receiver, a hook's error (or panic, which is
// recovered) is logged at ERROR and changes nothing else: the task is acknowledged and not run
// again. A hook whose effect must happen before the message is acknowledged (a callback outbox,
// an audit record) opts in with BeforeAck.
type HookFunc[E any] func(ctx context.Context, e *E) error

type hookEntry[E any] struct {
	fn      HookFunc[E]
	senders map[string]bool // nil: every task
}

type hookList[E any] struct {
	mu      sync.Mutex
	entries atomic.Pointer[[]hookEntry[E]]
}

func (l *hookList[E]) add(fn HookFunc[E], senders []string) {
	e := hookEntry[E]{fn: fn}
	if len(senders) > 0 {
		e.senders = make(map[string]bool, len(senders))
		for _, s := range senders {
			e.senders[s] = true
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var cur []hookEntry[E]
	if p := l.entries.Load(); p != nil {
		cur = *p
	}
	next := append(append(make([]hookEntry[E], 0, len(cur)+1), cur...), e)
	l.entries.Store(&next)
}

// fire calls every hook registered for task (sender), in registration order. It returns the
// first error; panics are recovered into panics (reported, not returned).
func (l *hookList[E]) fire(ctx context.Context, task string, ev *E, panics func(error)) error {
	p := l.entries.Load()
	if p == nil {
		return nil
	}
	var first error
	for _, h := range *p {
		if h.senders != nil && !h.senders[task] {
			continue
		}
		err, panicked := callHook(ctx, h.fn, ev)
		if panicked != nil {
			if panics != nil {
				panics(panicked)
			}
			continue
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

func callHook[E any](ctx context.Context, fn HookFunc[E], ev *E) (err error, panicked error) {
	defer func() {
		if r := recover(); r != nil {
			panicked = &HookPanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, ev), nil
}

// Hooks holds the functions connected to each event, like Celery's signal receivers. Connect
// before the worker runs or while it runs; Hooks is safe for concurrent use. Each On* method takes
// optional task names: with none, the hook fires for every task (Celery's connect()); with some,
// only for those (connect(sender=...)).
type Hooks struct {
	received hookList[TaskReceived]
	prerun   hookList[TaskPrerun]
	postrun  hookList[TaskPostrun]
	success  hookList[TaskSuccess]
	failure  hookList[TaskFailure]
	retry    hookList[TaskRetry]
	revoked  hookList[TaskRevoked]
	rejected hookList[TaskRejected]
	unknown  hookList[TaskUnknown]
	ready    hookList[WorkerReady]
	shutdown hookList[WorkerShutdown]
}

// OnTaskReceived connects fn to task_received: a message was accepted for the named tasks (all
// when none are named), before it waits for a slot. Errors are logged.
func (h *Hooks) OnTaskReceived(fn HookFunc[TaskReceived], tasks ...string) { h.received.add(fn, tasks) }

// OnTaskPrerun connects fn to task_prerun: the handler is about to run. Errors are logged.
func (h *Hooks) OnTaskPrerun(fn HookFunc[TaskPrerun], tasks ...string) { h.prerun.add(fn, tasks) }

// OnTaskPostrun connects fn to task_postrun: the handler returned, whatever the outcome, and its
// effects are done. Errors are logged.
func (h *Hooks) OnTaskPostrun(fn HookFunc[TaskPostrun], tasks ...string) { h.postrun.add(fn, tasks) }

// OnTaskSuccess connects fn to task_success: the result is stored, the message not yet
// acknowledged. Errors are logged; wrap fn in BeforeAck to hold the ack until it succeeds.
func (h *Hooks) OnTaskSuccess(fn HookFunc[TaskSuccess], tasks ...string) { h.success.add(fn, tasks) }

// OnTaskFailure connects fn to task_failure: the failure is stored, the message not yet
// acknowledged. Errors are logged; wrap fn in BeforeAck to hold the ack until it succeeds.
func (h *Hooks) OnTaskFailure(fn HookFunc[TaskFailure], tasks ...string) { h.failure.add(fn, tasks) }

// OnTaskRetry connects fn to task_retry: the retry is published and the RETRY state stored.
// Errors are logged; wrap fn in BeforeAck to hold the ack until it succeeds.
func (h *Hooks) OnTaskRetry(fn HookFunc[TaskRetry], tasks ...string) { h.retry.add(fn, tasks) }

// OnTaskRevoked connects fn to task_revoked: the task was revoked, expired or terminated and
// REVOKED is stored. Errors are logged; wrap fn in BeforeAck to hold the ack until it succeeds.
func (h *Hooks) OnTaskRevoked(fn HookFunc[TaskRevoked], tasks ...string) { h.revoked.add(fn, tasks) }

// OnTaskRejected connects fn to task_rejected: a message that could not be decoded or was
// invalid (it is dead-lettered). There is no task filter: the message has no usable task name.
func (h *Hooks) OnTaskRejected(fn HookFunc[TaskRejected]) { h.rejected.add(fn, nil) }

// OnTaskUnknown connects fn to task_unknown: a message for a task no handler is registered for.
func (h *Hooks) OnTaskUnknown(fn HookFunc[TaskUnknown]) { h.unknown.add(fn, nil) }

// OnWorkerReady connects fn to worker_ready: the worker is consuming.
func (h *Hooks) OnWorkerReady(fn HookFunc[WorkerReady]) { h.ready.add(fn, nil) }

// OnWorkerShutdown connects fn to worker_shutdown: the worker has drained and is stopping.
func (h *Hooks) OnWorkerShutdown(fn HookFunc[WorkerShutdown]) {
	h.shutdown.add(fn, nil)
}
