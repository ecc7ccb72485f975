package celerycompat

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Hook events mirror Celery's signals (celery/signals.py) and carry the arguments Celery passes,
// with Go names. Task is the task name (Celery's sender).

// TaskReceived mirrors task_received: a message was accepted (after the revoke and expiry checks).
type TaskReceived struct{ Request *Request }

// TaskPrerun mirrors task_prerun.
type TaskPrerun struct {
	TaskID, Task string
	Args         []any
	Kwargs       map[string]any
	Request      *Request
}

// TaskPostrun mirrors task_postrun (sent whatever the outcome).
type TaskPostrun struct {
	TaskID, Task string
	Args         []any
	Kwargs       map[string]any
	Retval       any
	State        State
	Request      *Request
}

// TaskSuccess mirrors task_success; it fires after the result is stored.
type TaskSuccess struct {
	Result  any
	Request *Request
}

// TaskFailure mirrors task_failure; it fires after the failure is stored.
type TaskFailure struct {
	TaskID    string
	Exception error
	Args      []any
	Kwargs    map[string]any
	Traceback string
	Request   *Request
}

// TaskRetry mirrors task_retry.
type TaskRetry struct {
	Request *Request
	Reason  error
}

// TaskRevoked mirrors task_revoked.
type TaskRevoked struct {
	Request    *Request
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

// TaskUnknown mirrors task_unknown: a message for a task this worker does not know.
type TaskUnknown struct {
	Raw     []byte
	Message *Message
	Name    string
	ID      string
	Err     error
}

// WorkerReady mirrors worker_ready; WorkerShutdown mirrors worker_shutdown.
type (
	WorkerReady    struct{ Hostname string }
	WorkerShutdown struct{ Hostname string }
)

// HookFunc handles one event. An error means the effect did not happen: for task_success,
// task_failure, task_retry and task_revoked the worker retries the hook with backoff and, if it
// keeps failing, does not acknowledge the message, so the task runs again later rather than an
// effect being skipped. A panic is recovered and logged and counts as done.
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

// HookPanicError is a panic recovered from a hook or handler, with its stack.
type HookPanicError struct {
	Value any
	Stack []byte
}

func (e *HookPanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

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

func (h *Hooks) OnTaskReceived(fn HookFunc[TaskReceived], tasks ...string) { h.received.add(fn, tasks) }
func (h *Hooks) OnTaskPrerun(fn HookFunc[TaskPrerun], tasks ...string)     { h.prerun.add(fn, tasks) }
func (h *Hooks) OnTaskPostrun(fn HookFunc[TaskPostrun], tasks ...string)   { h.postrun.add(fn, tasks) }
func (h *Hooks) OnTaskSuccess(fn HookFunc[TaskSuccess], tasks ...string)   { h.success.add(fn, tasks) }
func (h *Hooks) OnTaskFailure(fn HookFunc[TaskFailure], tasks ...string)   { h.failure.add(fn, tasks) }
func (h *Hooks) OnTaskRetry(fn HookFunc[TaskRetry], tasks ...string)       { h.retry.add(fn, tasks) }
func (h *Hooks) OnTaskRevoked(fn HookFunc[TaskRevoked], tasks ...string)   { h.revoked.add(fn, tasks) }

// OnTaskRejected and OnTaskUnknown take no task filter: the message has no usable task name.
func (h *Hooks) OnTaskRejected(fn HookFunc[TaskRejected]) { h.rejected.add(fn, nil) }
func (h *Hooks) OnTaskUnknown(fn HookFunc[TaskUnknown])   { h.unknown.add(fn, nil) }
func (h *Hooks) OnWorkerReady(fn HookFunc[WorkerReady])   { h.ready.add(fn, nil) }
func (h *Hooks) OnWorkerShutdown(fn HookFunc[WorkerShutdown]) {
	h.shutdown.add(fn, nil)
}
