package gocelery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// CeleryWorker runs registered tasks. On an AMQPCeleryBroker it is celerycompat's worker on
// the RabbitMQ transport (see AMQPCeleryBroker). On a RedisCeleryBroker it is celerycompat's
// worker on Redis: it fetches atomically into kombu's unacked records, runs up to numWorkers
// tasks at once, waits on Redis while idle instead of ticking, holds ETA tasks until their
// time, stores results (SUCCESS and FAILURE with traceback) and acknowledges after the result
// is stored. On any other CeleryBroker it calls GetTaskMessage from numWorkers goroutines,
// backing off while the broker is empty. It is safe for concurrent use.
type CeleryWorker struct {
	broker     CeleryBroker
	backend    CeleryBackend
	numWorkers int

	mu      sync.Mutex
	tasks   map[string]interface{}
	cancel  context.CancelFunc
	done    chan struct{} // closed when the current run has stopped; nil before the first
	wg      sync.WaitGroup
	engine  *celerycompat.Worker
	logger  *slog.Logger
	lastErr error
}

// NewCeleryWorker returns a worker taking tasks from broker and storing results in backend,
// running up to numWorkers tasks at once (below 1 is taken as 1).
func NewCeleryWorker(broker CeleryBroker, backend CeleryBackend, numWorkers int) *CeleryWorker {
	if numWorkers < 1 {
		numWorkers = 1
	}
	return &CeleryWorker{broker: broker, backend: backend, numWorkers: numWorkers, tasks: map[string]interface{}{}}
}

// SetLogger makes the worker log each task as a Celery worker does (received, succeeded,
// failed) and its broker errors; nil (the default) is silent. Call it before starting.
func (w *CeleryWorker) SetLogger(l *slog.Logger) {
	w.mu.Lock()
	w.logger = l
	w.mu.Unlock()
}

// Err returns the error the worker stopped with, if any (nil after a clean stop).
func (w *CeleryWorker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// StartWorkerWithContext starts the worker and returns at once. It runs until ctx is cancelled
// or StopWorker is called; a worker that is already running is left as it is, and one that has
// stopped starts again.
func (w *CeleryWorker) StartWorkerWithContext(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done != nil {
		select {
		case <-w.done:
		default:
			return // running
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.cancel, w.done, w.lastErr = cancel, done, nil
	if eb, ok := w.broker.(engineBroker); ok {
		if err := w.startEngine(wctx, eb, done); err != nil {
			w.lastErr = err
			w.logf(ctx, "worker did not start", err)
			cancel()
			close(done)
		}
		return
	}
	var loops sync.WaitGroup
	loops.Add(w.numWorkers)
	w.wg.Add(1)
	for range w.numWorkers {
		go func() {
			defer loops.Done()
			w.pollLoop(wctx)
		}()
	}
	go func() {
		defer w.wg.Done()
		loops.Wait()
		cancel()
		close(done)
	}()
}

// startEngine runs celerycompat's worker on the broker's engine. Called with w.mu held.
func (w *CeleryWorker) startEngine(ctx context.Context, eb engineBroker, done chan struct{}) error {
	broker, err := eb.transportFor(ctx)
	if err != nil {
		return err
	}
	cfg := celerycompat.WorkerConfig{
		Queues:      []string{eb.queue()},
		Concurrency: w.numWorkers,
		Logger:      w.logger,
	}
	if b, ok := w.backend.(*RedisCeleryBackend); ok {
		if cfg.Backend, err = b.engine(); err != nil {
			return err
		}
	}
	ew, err := celerycompat.NewWorker(broker, cfg)
	if err != nil {
		return fmt.Errorf("gocelery: worker: %w", err)
	}
	for name := range w.tasks {
		if err := ew.Register(name, w.handler(name)); err != nil {
			return fmt.Errorf("gocelery: register %s: %w", name, err)
		}
	}
	w.engine = ew
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(done)
		err := ew.Run(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			w.mu.Lock()
			w.lastErr = err
			w.mu.Unlock()
		}
	}()
	return nil
}

// handler adapts the task registered under name to the engine. The task is looked up on each
// run, so Register replaces it for the tasks that follow.
func (w *CeleryWorker) handler(name string) celerycompat.Handler {
	return celerycompat.HandlerFunc(func(ctx context.Context, req *celerycompat.Request) (any, error) {
		task := w.GetTask(name)
		if task == nil {
			return nil, celerycompat.NewTaskError("NotRegistered", name)
		}
		v, err := runTask(task, req.Args, req.Kwargs)
		if errors.Is(err, ErrBadArguments) {
			err = celerycompat.NewTaskError("TypeError", err.Error())
		}
		if _, ours := w.backend.(*RedisCeleryBackend); !ours {
			// The engine stores nothing without its own backend: store through the interface.
			rm := &ResultMessage{ID: req.ID, Status: "SUCCESS", Result: v, Children: []interface{}{}}
			if err != nil {
				rm = failureMessage(req.ID, err)
			}
			if serr := w.backend.SetResult(req.ID, rm); serr != nil {
				// The result is not stored: run the task again later rather than acknowledge
				// it with no result (as many times as it takes, backing off; the retry is
				// published before this message is acknowledged, so a crash meanwhile loses
				// nothing either).
				return nil, celerycompat.Retry(fmt.Errorf("gocelery: store result %s: %w", req.ID, serr),
					celerycompat.RetryIn(storeRetryDelay(req.Retries)), celerycompat.RetryMax(-1))
			}
		}
		return v, err
	})
}

// storeRetryDelay is how long a task whose result could not be stored waits before it runs again,
// after retries earlier attempts: 1 s, doubling up to maxStoreRetryDelay, so a backend that stays
// down does not have the task run (and its side effects repeat) every second.
func storeRetryDelay(retries int) time.Duration {
	if retries < 0 {
		retries = 0
	}
	d := time.Second << min(retries, 16)
	return min(d, maxStoreRetryDelay)
}

// maxStoreRetryDelay caps storeRetryDelay.
const maxStoreRetryDelay = 5 * time.Minute

// pollLoop serves a broker known only through CeleryBroker: its GetTaskMessage does not wait,
// so an empty broker is polled again after a pause that doubles from 1 ms to 50 ms and drops
// back to nothing as soon as a task arrives.
func (w *CeleryWorker) pollLoop(ctx context.Context) {
	const maxWait = 50 * time.Millisecond
	wait := time.Millisecond
	for ctx.Err() == nil {
		tm, err := w.broker.GetTaskMessage()
		if err != nil || tm == nil {
			if err != nil {
				w.logf(ctx, "broker error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, maxWait)
			continue
		}
		wait = time.Millisecond
		rm, err := w.RunTask(tm)
		if err != nil {
			rm = failureMessage(tm.ID, err)
		}
		if err := w.backend.SetResult(tm.ID, rm); err != nil {
			w.logf(ctx, "store result", err, "task_id", tm.ID)
		}
	}
}

func (w *CeleryWorker) logf(ctx context.Context, msg string, err error, attrs ...any) {
	if w.logger != nil {
		w.logger.ErrorContext(ctx, msg, append(attrs, "error", err)...)
	}
}

// StartWorker starts the worker and returns at once; StopWorker stops it.
func (w *CeleryWorker) StartWorker() { w.StartWorkerWithContext(context.Background()) }

// StopWorker stops fetching and waits for the running tasks to finish, store their results and
// be acknowledged (a warm shutdown); tasks fetched but not started go back to their queue.
func (w *CeleryWorker) StopWorker() {
	w.mu.Lock()
	cancel := w.cancel
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	w.wg.Wait()
}

// StopWait waits until the worker has stopped.
func (w *CeleryWorker) StopWait() { w.wg.Wait() }

// GetNumWorkers returns how many tasks the worker runs at once.
func (w *CeleryWorker) GetNumWorkers() int { return w.numWorkers }

// Register makes task run for the Celery task name: a CeleryTask or a function. Registering a
// name again replaces the task. A name registered while the worker runs is served from then on.
func (w *CeleryWorker) Register(name string, task interface{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, known := w.tasks[name]
	w.tasks[name] = task
	if w.engine != nil && !known {
		if err := w.engine.Register(name, w.handler(name)); err != nil {
			w.lastErr = fmt.Errorf("gocelery: register %s: %w", name, err)
		}
	}
}

// GetTask returns the task registered under name, or nil.
func (w *CeleryWorker) GetTask(name string) interface{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tasks[name]
}

// RunTask runs one task message with the registered task and returns its SUCCESS result. An
// expired message, an unregistered task, arguments that do not fit (ErrBadArguments) and a task
// error are returned as errors; a panicking task is returned as an error too.
func (w *CeleryWorker) RunTask(message *TaskMessage) (rm *ResultMessage, err error) {
	if message == nil {
		return nil, fmt.Errorf("%w: nil task message", ErrUnsupportedMessage)
	}
	if message.Expires != nil && message.Expires.Before(time.Now()) {
		return nil, fmt.Errorf("gocelery: task %s expired at %s", message.ID, message.Expires)
	}
	if message.Args == nil {
		return nil, fmt.Errorf("%w: task %s has no args", ErrUnsupportedMessage, message.ID)
	}
	task := w.GetTask(message.Task)
	if task == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotRegistered, message.Task)
	}
	defer func() {
		if r := recover(); r != nil {
			rm, err = nil, fmt.Errorf("gocelery: task %s panicked: %v", message.ID, r)
		}
	}()
	v, err := runTask(task, message.Args, message.Kwargs)
	if err != nil {
		return nil, err
	}
	return &ResultMessage{ID: message.ID, Status: "SUCCESS", Result: v, Children: []interface{}{}}, nil
}

// failureMessage is a FAILURE result in Celery's exception format, for a backend known only
// through CeleryBackend.
func failureMessage(id string, err error) *ResultMessage {
	te := protocol.ErrorToTaskError(err)
	if errors.Is(err, ErrBadArguments) {
		te = celerycompat.NewTaskError("TypeError", err.Error())
	}
	var module interface{}
	if te.ExcModule != "" {
		module = te.ExcModule
	}
	tb := te.Traceback
	if tb == "" {
		tb = err.Error()
	}
	return &ResultMessage{ID: id, Status: "FAILURE", Traceback: tb, Children: []interface{}{},
		Result: map[string]interface{}{"exc_type": te.ExcType, "exc_message": te.ExcMessage, "exc_module": module}}
}
