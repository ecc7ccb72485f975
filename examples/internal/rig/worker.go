package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/celeryhook"
	"github.com/celerybridge/celerybridge/celerycompat"
)

// TaskArgs are tasks.process_task's parameters, in the Python signature's order
// process_task(self, task_id, data).
type TaskArgs struct {
	TaskID string `json:"task_id"`
	Data   any    `json:"data"`
}

// TaskResult builds what tasks.process_task returns, the original's shape:
//
//	{"status": "success", "business_task_id": task_id, "data": data,
//	 "message": "任务执行完成", "process_time": <TASK_SLEEP in seconds>}
//
// process_time is the configured work time, as the original writes its sleep (1.0).
func TaskResult(taskID string, data any, sleep time.Duration) map[string]any {
	return map[string]any{
		"status":           "success",
		"business_task_id": taskID,
		"data":             data,
		"message":          MsgTaskDone,
		"process_time":     sleep.Seconds(),
	}
}

// StartedAfter is how long a task runs before the rig's worker stores STARTED: a task that
// ends sooner (the zero-duration load tests) saves that round trip; a 1 s task shows as
// STARTED in /task-status after 10 ms.
const StartedAfter = 10 * time.Millisecond

// CallbackLinger is how long the rig's dispatcher waits after a task finishes for more
// callbacks to send with it (callback.DispatcherConfig.Linger): one task at a time otherwise
// means one claim, one request and one SQLite commit per callback. It adds at most 20 ms to a
// callback. In the 1000-task end-to-end benchmark on 2 cores, 20 ms did about 1,000-1,150
// tasks/s where 5 ms did 820-920.
const CallbackLinger = 20 * time.Millisecond

// NewWorker builds the Go worker for tasks.process_task on the default queue "celery":
// Concurrency from cfg, prefetch multiplier 1, acks_late, track_started (after StartedAfter), result_extended with
// cfg.ResultExpires, max_retries 0 (as the original), and callbacks recorded in the outbox on
// deps.Broker (celeryhook) before each ack. The returned Dispatcher delivers them (after
// CallbackLinger) to
// cfg.CallbackURL, signed when cfg.CallbackSecret is set. Run both with RunWorker (or w.Run and
// d.Run yourself; shut the worker down first, and bound its drain: the worker sets none). ctx is not retained; nothing here touches Redis
// until Run.
//
// A task fails on purpose, raising ValueError, when its data is an object with "fail": true, or
// when it is the FailEvery-th task this worker started (counting from 1).
func NewWorker(ctx context.Context, cfg Config, deps Deps) (*celerycompat.Worker, *callback.Dispatcher, error) {
	if err := deps.check(); err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	log := deps.logger()
	broker, _, err := deps.transport(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	backend, err := celerycompat.NewBackend(deps.results(), celerycompat.BackendConfig{
		ResultExtended: true, ResultExpires: cfg.ResultExpires, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("rig: backend: %w", err)
	}
	w, err := celerycompat.NewWorker(broker, celerycompat.WorkerConfig{
		Queues:             []string{Queue},
		Concurrency:        cfg.Concurrency,
		PrefetchMultiplier: 1,
		TrackStarted:       true,
		StartedAfter:       StartedAfter,
		Backend:            backend,
		Logger:             log, // no ShutdownTimeout: RunWorker bounds the warm shutdown
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rig: worker: %w", err)
	}
	t := &task{sleep: cfg.TaskSleep, failEvery: int64(cfg.FailEvery), wait: deps.Sleep}
	if t.wait == nil {
		t.wait = sleepCtx
	}
	if err := w.Register(TaskName, celerycompat.Typed(t.process, "task_id", "data"),
		celerycompat.TaskMaxRetries(0)); err != nil {
		return nil, nil, fmt.Errorf("rig: register %s: %w", TaskName, err)
	}
	ob, err := callback.NewOutbox(deps.Broker, callback.OutboxConfig{URL: cfg.CallbackURL, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("rig: outbox: %w", err)
	}
	celeryhook.Connect(w.Hooks(), ob, celeryhook.Options{}, TaskName)
	d, err := callback.NewDispatcher(ob, callback.DispatcherConfig{Secret: secret(cfg), Logger: log, Linger: CallbackLinger})
	if err != nil {
		return nil, nil, fmt.Errorf("rig: dispatcher: %w", err)
	}
	return w, d, nil
}

// task is tasks.process_task.
type task struct {
	sleep     time.Duration
	failEvery int64
	started   atomic.Int64
	wait      func(ctx context.Context, d time.Duration) error
}

func (t *task) process(ctx context.Context, req *celerycompat.Request, a TaskArgs) (any, error) {
	n := t.started.Add(1)
	if err := t.wait(ctx, t.sleep); err != nil {
		return nil, err // shutting down past the timeout: the message stays un-acked and runs again
	}
	if m, ok := a.Data.(map[string]any); ok && m["fail"] == true {
		return nil, simulated("data.fail is true")
	}
	if t.failEvery > 0 && n%t.failEvery == 0 {
		return nil, simulated(fmt.Sprintf("task %d of every %d fails (FAIL_EVERY)", n, t.failEvery))
	}
	return TaskResult(a.TaskID, a.Data, t.sleep), nil
}

// simulated is the on-purpose failure: a builtins.ValueError, which Python readers raise as is.
func simulated(why string) error {
	return &celerycompat.TaskError{ExcModule: "builtins", ExcType: "ValueError",
		ExcMessage: []any{"simulated failure: " + why}}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func secret(cfg Config) []byte {
	if cfg.CallbackSecret == "" {
		return nil
	}
	return []byte(cfg.CallbackSecret)
}

// DispatcherDrain bounds how long RunWorker's dispatcher may go on delivering callbacks once the
// worker has stopped; what it has not delivered by then stays in the outbox for the next start.
const DispatcherDrain = 5 * time.Second

// RunWorker runs w and d until ctx ends, then stops them the way a Celery worker stops:
//
//   - warm shutdown, when ctx ends (the first SIGINT or SIGTERM in Main): fetch nothing more, put
//     prefetched messages back on the queue, and wait for the running tasks to finish, for at most
//     warm (0: as long as they take, as Celery waits);
//   - cold shutdown, when cold ends (the second signal) or warm runs out: cancel the running
//     tasks; each is handed back to the front of the queue to run again, recording no failure
//     (its state stays STARTED).
//
// Then the dispatcher delivers the callbacks it can, for at most DispatcherDrain and only until
// cold ends; the rest stay in the outbox for the next start. Either shutdown is what was asked
// for, so RunWorker returns nil after both; it returns an error only when something failed. log
// (nil: silent) says which shutdown happened.
func RunWorker(ctx, cold context.Context, w *celerycompat.Worker, d *callback.Dispatcher, warm time.Duration, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dctx, stopDispatcher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDispatcher()
	derr := make(chan error, 1)
	go func() { derr <- d.Run(dctx) }()
	werr := make(chan error, 1)
	go func() { werr <- w.Run(context.WithoutCancel(ctx)) }() // stopped by Shutdown below

	var err error
	select {
	case err = <-werr: // Run ended by itself: it failed
		if err != nil {
			err = fmt.Errorf("rig: worker: %w", err)
		}
	case <-ctx.Done():
		err = shutdownWorker(cold, w, warm, log)
		<-werr
	}

	sctx, cancel := context.WithTimeout(cold, DispatcherDrain)
	defer cancel()
	serr := d.Shutdown(sctx)
	if errors.Is(serr, callback.ErrDispatcherClosed) || (serr != nil && sctx.Err() != nil) {
		serr = nil // Run had already returned, or the drain was cut short: the outbox keeps the rest
	}
	stopDispatcher()
	rerr := <-derr
	if rerr != nil && !errors.Is(rerr, callback.ErrDispatcherClosed) {
		rerr = fmt.Errorf("rig: dispatcher: %w", rerr)
	} else {
		rerr = nil
	}
	if serr != nil {
		serr = fmt.Errorf("rig: dispatcher shutdown: %w", serr)
	}
	return errors.Join(err, serr, rerr)
}

// shutdownWorker is RunWorker's warm shutdown, turning cold when cold ends or warm (when
// positive) runs out.
func shutdownWorker(cold context.Context, w *celerycompat.Worker, warm time.Duration, log *slog.Logger) error {
	sctx := cold
	if warm > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(cold, warm)
		defer cancel()
	}
	err := w.Shutdown(sctx)
	switch {
	case err == nil, errors.Is(err, celerycompat.ErrWorkerClosed):
		log.Info("warm shutdown done: running tasks finished")
		return nil
	case cold.Err() != nil:
		log.Info("cold shutdown done: running tasks stopped and handed back to the queue")
		return nil
	case sctx.Err() != nil:
		log.Info("warm shutdown bound reached, so cold shutdown: running tasks stopped and handed back to the queue",
			"warm_shutdown_timeout", warm)
		return nil
	default:
		return fmt.Errorf("rig: worker shutdown: %w", err)
	}
}
