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
// On an AMQPCeleryBroker the same engine runs on RabbitMQ (see the RabbitMQ section).
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
// # RabbitMQ (AMQP)
//
// gocelery's AMQP API is here with the same names and signatures: AMQPExchange,
// NewAMQPExchange, AMQPQueue, NewAMQPQueue, AMQPCeleryBroker (its exported fields, its methods
// SendCeleryMessage, GetTaskMessage, StartConsumingChannel, CreateExchange, CreateQueue),
// NewAMQPConnection, NewAMQPCeleryBroker, NewAMQPCeleryBrokerByConnAndChannel,
// AMQPCeleryBackend, NewAMQPCeleryBackend and NewAMQPCeleryBackendByConnAndChannel. The AMQP
// client is github.com/rabbitmq/amqp091-go, the RabbitMQ team's maintained fork of
// github.com/streadway/amqp with the same API, so the fields are amqp091-go types: a program
// that builds its own *amqp.Connection or *amqp.Channel for these constructors changes that
// import too, from "github.com/streadway/amqp" to "github.com/rabbitmq/amqp091-go" (package
// name amqp091; import it as amqp to keep the call sites).
//
// On an AMQPCeleryBroker everything goes through celerycompat on its RabbitMQ transport
// (package celerycompat/amqp): Delay publishes as Celery does (default exchange, routing key
// = queue, protocol 2 headers, persistent, correlation_id = task id, publisher confirms), and
// the worker is celerycompat.Worker: a message is acknowledged after its result is stored, so
// a worker that dies mid-task loses nothing (RabbitMQ redelivers it when the connection
// drops), and messages that cannot be decoded or name no registered task go to the queue
// "celerybridge.deadletter" with the reason in their headers. The queue and exchange are
// declared as Celery declares them (exchange "celery", direct, durable; queue "celery",
// durable, bound with routing key "celery"), so Go and Python workers and clients share them.
// The engine opens a connection of its own, which it re-establishes when lost.
//
// Results: Celery 5 removed the "amqp" result backend, so no Python Celery 5 peer reads or
// writes what AMQPCeleryBackend stores. It keeps gocelery's format for Go-to-Go use (and for
// programs still on gocelery): a result is one JSON message in a queue named after the task id
// without dashes, durable, auto-delete, expiring a day after last use. With Python peers use
// an AMQPCeleryBroker for the tasks and a RedisCeleryBackend for the results, as Celery
// deployments on RabbitMQ commonly do.
//
// How the AMQP part differs from gocelery's, and why:
//
//   - Celery's declarations: gocelery declared an auto-deleted exchange "default" (used by
//     nothing) and NewAMQPExchange made exchanges auto-deleted. RabbitMQ refuses a
//     re-declaration with other flags (406 PRECONDITION_FAILED, closing the channel), so an
//     exchange or queue that Python Celery also declares must have Celery's flags: the
//     brokers use exchange "celery", NewAMQPExchange returns a durable exchange that is not
//     auto-deleted, CreateQueue binds the queue to the exchange as Celery does, and a broker
//     whose Exchange or Queue asks for other flags is an error wrapping ErrConfig at its first
//     use rather than a 406 from the broker.
//   - Nothing is consumed in the constructor: gocelery's NewAMQPCeleryBroker started a
//     consumer with prefetch 4 at once, so a program that only sent tasks held up to four
//     of them un-run until it exited. GetTaskMessage starts its consumer on first use
//     (StartConsumingChannel starts it earlier) and returns (nil, nil) when no task arrives,
//     as RedisCeleryBroker does, where gocelery returned an error.
//   - No panics: gocelery's constructors panicked when the broker could not be reached.
//     NewAMQPConnection returns (nil, nil) instead (NewAMQPConnectionContext returns the
//     error); NewAMQPCeleryBroker and NewAMQPCeleryBackend return values whose methods, Delay
//     and the worker return the connection error; Reconnect likewise.
//   - A broker made by NewAMQPCeleryBrokerByConnAndChannel needs its URL field set:
//     amqp091-go erases the password of an open connection, and the engine must dial its own
//     (celerycompat/amqp runs on connections it dials, to re-establish them). Without URL its
//     first use is an error wrapping ErrConfig that says so. NewAMQPCeleryBroker sets URL.
//   - Reading a result does not consume it: gocelery's GetResult removed the message (and
//     blocked for ever if there was none, so Get's timeout never applied). Here GetResult
//     takes the message and puts it back, returning ErrResultNotAvailable at once when there
//     is none, so Get honours its timeout and Ready, AsyncGet and Get can all read a result.
//     SetResult waits for the broker's confirm, so the task is acknowledged only once its
//     result is held; when it cannot store (as with any backend known only through
//     CeleryBackend), the worker runs the task again a second later instead of acknowledging
//     it without a result.
//   - Added, not changed: AMQPCeleryBroker.Protocol, URL and CloseEngine, and
//     NewAMQPConnectionContext.
//
// Everything in this package is safe for concurrent use unless its doc says otherwise.
package gocelery
