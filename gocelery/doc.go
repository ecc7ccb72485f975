// Package gocelery offers the public API of github.com/gocelery/gocelery v1 on celerybridge's
// engine (package celerycompat), so that a program written for gocelery builds and runs after
// its import path changes from "github.com/gocelery/gocelery" to
// "github.com/celerybridge/celerybridge/gocelery". Nothing else in the program changes: the
// same identifiers, the same signatures, the same struct fields (RedisCeleryBackend{Pool: p}).
//
// The package is named gocelery, after the API it reproduces, because that is the name its
// users already write at every call site (gocelery.NewCeleryClient, gocelery.NewRedisBroker):
// a different name would force them to edit every line or add an import alias, which is the
// change this package exists to avoid. Its directory says what it is: the gocelery API,
// kept apart from celerycompat, whose API follows Celery's own.
//
// # What runs underneath
//
// On a RedisCeleryBroker and RedisCeleryBackend (NewRedisBroker, NewRedisBackend, or literals
// with Pool set) everything goes through celerycompat:
//
//   - Delay and DelayKwargs send task protocol 2, what Celery 4 and later send and expect, with
//     kombu's binding and priority lists. RedisCeleryBroker.Protocol = 1 sends protocol 1, as
//     gocelery did, for Celery 3 workers.
//   - The worker is celerycompat.Worker: a message is taken atomically into kombu's unacked
//     records and acknowledged after its result is stored, so a crash puts it back (a Python or
//     Go worker's restore sweep) instead of losing it; Python workers restore what a dead Go
//     worker held and the other way round. It reads protocol 1 and 2. It waits on Redis while
//     the queue is empty (no ticker): a task starts as soon as it arrives and numWorkers tasks
//     run at once. ETA and countdown are honoured, expired tasks are revoked, and messages that
//     cannot be decoded go to the dead-letter list with the reason.
//   - Results are stored as a Python worker stores them, SET plus PUBLISH, so Python's
//     AsyncResult.get() wakes at once; a task error is stored as FAILURE with the exception and
//     a traceback, a panic with its Go stack. AsyncResult.Get waits on the PUBLISH.
//
// Any other CeleryBroker or CeleryBackend implementation is used only through its interface
// methods, as gocelery used them (see CeleryWorker).
//
// # Arguments and results
//
// A task registered as a function gets the positional args, converted as gocelery converted
// them: a JSON number fills an int (a fraction is dropped, as gocelery's int(float64) did) or a
// float32; strings, bools, lists ([]interface{}) and objects (map[string]interface{}) pass as
// encoding/json decodes them. A CeleryTask gets the keyword args with numbers as float64,
// which is what gocelery's documented ParseKwargs asserts. AsyncResult.Get returns values in
// the same shape (a number is a float64).
//
// # Differences from gocelery, and why
//
//   - Protocol 2 by default: gocelery wrote protocol 1 only and could not read protocol 2,
//     so a Python client's default message was dropped. Set Protocol = 1 for Celery 3.
//   - No destructive pop: gocelery's BRPOP lost the task if the worker died before storing a
//     result. Here StopWorker (and cancelling the context) is a warm shutdown: fetched tasks not
//     yet started go back to the queue, running ones finish.
//   - No 100 ms ticker: gocelery's goroutines each fetched at most one task per 100 ms (10
//     tasks/s per goroutine, whatever the load). See BenchmarkThroughput.
//   - Failures are stored: gocelery logged a task error and stored nothing, so Get timed out.
//     Here a task error (RunTask's error, a function's non-nil last error result, a panic,
//     arguments that do not fit) stores FAILURE with a traceback, Python's get() raises it, and
//     Get and AsyncGet return an error wrapping ErrTaskFailed at once.
//   - A function's error result counts: gocelery stored only the first result and dropped a
//     returned error. Arguments that do not fit the function (count or type) are a TypeError
//     (ErrBadArguments), where gocelery's reflect.Call panicked and took the program down.
//   - Keyword arguments sent to a task registered as a function fail it with TypeError, as
//     Python does for an unexpected keyword; gocelery ignored them and ran the function on the
//     positional arguments alone.
//   - Each run of a CeleryTask gets a fresh copy of the registered value (when it is a pointer
//     to a struct): gocelery called ParseKwargs and RunTask on the one registered value from
//     every goroutine at once, a data race with numWorkers > 1.
//   - Integers are exact: a positional int64 or uint64 argument is filled from the number as
//     written, not through float64 (which loses integers beyond 2^53).
//   - Ready returns (false, nil) for a task with no result yet, where gocelery returned an
//     error ("result not available"). AsyncGet still returns an error then
//     (ErrResultNotAvailable), as gocelery did.
//   - NewCeleryClient returns an error (ErrConfig) for a nil broker or backend instead of a
//     client that panics later; StopWorker on a worker never started returns instead of
//     panicking.
//   - Logging: gocelery wrote to the standard logger; this package is silent unless
//     CeleryWorker.SetLogger is given an *slog.Logger.
//   - Nothing is dropped: gocelery logged and discarded a message it could not decode, a task
//     no one had registered, and an expired task. Here the first two go to the dead-letter list
//     with the reason (the worker keeps serving; RedisCeleryBroker.DeadLetters reads them),
//     and an expired task is stored as REVOKED, as Celery does.
//   - Added, not changed: RedisCeleryBroker.Protocol, VisibilityTimeout and DeadLetters,
//     RedisCeleryBackend.Close, CeleryWorker.SetLogger and Err, NewCeleryMessage,
//     CeleryMessage.DecodeTaskMessage, and the Err* sentinels.
//
// # Not here yet: AMQP
//
// gocelery's RabbitMQ constructors (NewAMQPCeleryBroker, NewAMQPCeleryBackend,
// NewAMQPConnection, the ...ByConnAndChannel variants, AMQPExchange, AMQPQueue) are not
// provided: celerybridge has no RabbitMQ transport yet (issue 14), and this package offers
// nothing it cannot back with a real one. A program using them does not build until they come
// with that transport.
//
// Everything in this package is safe for concurrent use unless its doc says otherwise.
package gocelery
