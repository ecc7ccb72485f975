// Package celerycompat lets Go programs join a Python Celery deployment over Redis as equals:
// Go producers send tasks that Python workers run, Go workers run tasks that Python sends,
// and results, retries, chains, groups, chords, revokes, remote control (`celery inspect`)
// and events (Flower) work across both. It speaks Celery's own wire format (task protocol 1
// and 2, kombu's Redis transport, the Redis result backend) and is tested on every run
// against real Celery 5.2.6 and 5.7.0.
//
// # Start here
//
// An App is the Go side of `app = Celery(broker=..., backend=...)`:
//
//	app, err := celerycompat.New(celerycompat.Config{
//		BrokerURL:     "redis://localhost:6379/0",
//		ResultBackend: "redis://localhost:6379/1",
//	})
//	defer app.Close()
//
//	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil) // app.send_task
//	v, err := res.Get(ctx)                                    // AsyncResult.get()
//
//	w, err := app.Worker(celerycompat.WorkerConfig{})          // celery worker
//	w.Register("tasks.add", celerycompat.Typed(add, "x", "y"))
//	err = w.Run(ctx)                                           // until ctx is cancelled
//
// Config.PeerVersion names the oldest Celery on the Python side; it picks the wire format of
// everything the app writes. Users who bring their own redigo pool build the same pieces
// with NewBroker, NewBackend, NewProducer, NewWorker and NewControl.
//
// # Handlers
//
// A Handler runs one task. Typed binds args and kwargs into a struct whose json tags are the
// Python parameter names, with Python's call rules (a missing required argument or an
// unexpected keyword is the TypeError Python raises) and Python's integers (exact int64,
// uint64 and *big.Int; int + int stays int). A handler fails its task by returning an
// error: NewTaskError("ValueError", "bad") makes Python's AsyncResult.get() raise a real
// ValueError; any other error arrives as GoError. Retry(err, RetryIn(d)) is self.retry.
// The context is cancelled when the soft time limit passes (its cause is
// ErrSoftTimeLimitExceeded), on the hard limit, on revoke(terminate=True) and on hard
// shutdown. A panic fails the task with its Go stack as the traceback (PanicError).
//
// # Hooks
//
// Hooks mirror Celery's signals (task_received, task_prerun, task_success, ...). Like a
// signal receiver, a hook's error is logged and the task is acknowledged; a hook wrapped in
// BeforeAck holds the acknowledgement until it succeeds, so its effect (a callback outbox
// entry) is delayed or repeated, never skipped.
//
// # Logging
//
// With WorkerConfig.Logger (or Config.Logger) set, the worker logs each task as Celery's
// worker does: received, succeeded in Ns: result, raised unexpected, retry, time limits, at
// Celery's levels, with task_id and task attributes. A nil logger is silent.
//
// # Differences from a Python worker
//
// link_error: a Go worker publishes each errback of a failed task as a task of its own, with
// the failed task's id prepended to the errback's args (Celery's older errback convention,
// `def on_error(task_id)`). A Python worker does the same for an errback it does not know,
// but one it has registered with more than one parameter it calls inline, in the failing
// worker, as errback(request, exc, traceback), and never publishes. So an errback written
// for the inline shape fails with TypeError when a Go worker's task fails (it is called with
// the id alone), and an errback only Go workers know always receives the id form. Write
// errbacks meant for both as one-parameter tasks taking the task id, and read the exception
// from the result backend (AsyncResult(id).Get). TestLinkErrorMixedWorkers checks both
// directions against Celery 5.2.6 and 5.7.0.
//
// Everything in this package is safe for concurrent use unless its doc says otherwise.
package celerycompat
