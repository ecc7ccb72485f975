// Package celerybridge lets Go programs join a Python Celery deployment over Redis as equals:
// Go producers send tasks that Python workers run, Go workers run tasks that Python producers
// send, results and crash recovery work across both, and Celery's own tools see Go workers.
//
// This root package holds documentation and tests only: the wire-vector tests
// (protocol_test.go) and the layout test (layout_test.go), which enforces the import rules
// below.
//
// # Packages
//
// Module github.com/celerybridge/celerybridge; each package's doc says more.
//
//	celerycompat             the one import a user needs: App (the entry point, from the broker
//	                         and result URLs), Broker (kombu's Redis transport), Backend (the
//	                         Redis result backend), Producer, Worker, Hooks, Handler, AsyncResult,
//	                         Control (remote control) and events for Flower, and Transport, the
//	                         seam between Worker/Producer and a broker. Imports
//	                         celerycompat/protocol, celerycompat/internal/rdb, redigo, google/uuid
//	                         and the standard library; nothing of callback or examples.
//	celerycompat/internal/rdb
//	                         the Redis layer: every key, Lua script (with its KEYS and ARGV),
//	                         pipeline and subscription of the broker, backend, chords, remote
//	                         control and events. Imports only redigo and the standard library;
//	                         nothing else in celerycompat sends a Redis command (a test checks).
//	celerycompat/amqp        the RabbitMQ transport (kombu's py-amqp wire): a
//	                         celerycompat.Transport on rabbitmq/amqp091-go. Imports celerycompat,
//	                         celerycompat/protocol and amqp091-go; celerycompat never imports it,
//	                         so Redis-only programs do not compile an AMQP client.
//	celerycompat/protocol    Celery's wire format with no I/O: task messages (protocol 1 and 2),
//	                         the JSON and msgpack codecs, kombu's JSON markers, Python time and
//	                         repr, the result meta and exception formats, states. Imports only the
//	                         standard library and its codec library (vmihailenco/msgpack): never
//	                         celerycompat, never redigo or any Redis client.
//	callback                 signed HTTP result callbacks: the durable Redis outbox, the
//	                         Dispatcher that sends them and the http.Handler that receives them
//	                         exactly once; the Store interface and an in-memory Store. Imports the
//	                         standard library, redigo and fasthttp; never SQLite, pgx or a web
//	                         framework (echo mounts the handler with echo.WrapHandler).
//	callback/celeryhook      connects an outbox to a celerycompat worker's hooks. Imports callback
//	                         and celerycompat.
//	callback/sqlitestore     a callback.Store in an SQLite file (modernc.org/sqlite). Imports
//	                         callback and the SQLite driver; only it and pgstore compile a database
//	                         driver, so importing callback does not.
//	callback/pgstore         a callback.Store in PostgreSQL (jackc/pgx/v5). Imports callback and
//	                         pgx.
//	callback/storetest       the conformance suite every callback.Store runs. Imports callback,
//	                         testing, go-cmp and google/uuid; meant for tests.
//	gocelery                 the public API of github.com/gocelery/gocelery v1 on celerycompat.
//	                         Imports celerycompat, redigo and google/uuid.
//	internal/celerytest      starts the real peers of integration and interop tests (redis-server,
//	                         Python Celery workers). Imported only by _test.go files.
//	examples/...             the original rig rebuilt in Go: one small main package per service
//	                         (main_api, callback_receiver, worker, loadtest, demo) around
//	                         examples/internal/rig and examples/internal/loadtest, and the
//	                         end-to-end tests (examples/e2e). They may import anything above
//	                         (echo v4 among others); nothing outside examples/ imports them.
//
// # Supported Celery versions
//
// Celery 5.2 through 5.7 with kombu's Redis transport, tested against real peers on every run:
// Celery 5.7.0 from PyPI and Debian's python3-celery 5.2.6. Codec.PeerVersion says which peer
// reads what Go writes: the zero value writes the 5.2 format every 5.x reader accepts; 5.3 and
// later enable kombu's JSON value markers (datetime, Decimal, UUID, bytes) and the stamping
// headers; 5.4 and 5.5 change the result's date_done format. Messages and results from any of
// these versions are read whatever PeerVersion says.
//
// # Redis key map
//
// Broker database (the broker URL's DB); every key gets the global_keyprefix transport option
// in front when one is set:
//
//	<queue>                      list: waiting messages, priority 0-2 (LPUSH by producers, popped from the tail)
//	<queue>\x06\x16<3|6|9>       list: the same queue's priority 3-5, 6-8 and 9 messages
//	_kombu.binding.<exchange>    set: "<routing_key>\x06\x16<pattern>\x06\x16<queue>" bindings
//	unacked                      hash: delivery_tag -> [envelope, exchange, routing_key], messages in flight
//	unacked_index                zset: delivery_tag scored by delivery time (unix seconds)
//	unacked_mutex                string: lock held by a visibility-timeout restore sweep
//	celerybridge.deadletter      list: messages no worker can run (celerybridge's own key)
//
// Result database (the backend URL's DB), with the result key prefix of Celery >= 5.3 if set:
//
//	celery-task-meta-<task_id>           string: a task's state and result (also its pub/sub channel)
//	celery-taskset-meta-<group_id>       string: a saved group
//	celery-taskset-meta-<group_id>.j/.t/.s  chord bookkeeping: results, counter, size
//
// Each dead-letter element is a one-line JSON object {"reason", "queue", "time", "tag",
// "task_id", "task"}, a newline, then the original message bytes exactly as they were in the
// queue; Broker.DeadLetters reads them.
//
// # Losing nothing
//
// kombu takes a message with BRPOP and only then records it as un-acked, in a second command;
// a worker killed between the two loses the message (celery#7950). A celerybridge worker takes
// messages with one Lua script that pops the first waiting message (in kombu's order:
// priority-major, queues rotated round-robin) and writes kombu's unacked and unacked_index
// entries in the same atomic step, so a kill at any instant leaves every message either in its
// queue or recorded as in flight, where any worker's restore sweep (Python's or Go's) finds it.
// The script decodes the envelope inside pcall: an element that is not a kombu envelope is moved
// to the dead-letter list in the same step instead of being lost or crashing the consumer.
//
// While every queue is empty, a blocking pop (BRPOP, BLMPOP) would reopen that window, so an
// idle worker waits with a command that removes nothing: BLMOVE list list RIGHT RIGHT takes the
// tail element and pushes it back to the tail in one atomic step, leaving the list exactly as it
// was, and blocks while the list is empty. The wake-up is only a hint; the message is still taken by the atomic fetch
// script. A worker killed between the wake-up and the fetch has taken nothing, and the message
// stays in its queue for the next worker.
//
// BLMOVE watches one list, and a worker reads several: each queue has four lists (kombu's
// priority steps 0, 3, 6 and 9). The worker keeps one waiter per list, each blocking on its own
// pooled connection while every list is empty, so that a message on any queue at any priority
// wakes it at once. The first waiter to fire runs the fetch script at once on its own
// connection, for as many messages as the prefetch window has room for; the script walks every
// list in kombu's order (priority-major, queues rotated), so which list woke the worker changes
// nothing in what it takes. The alternatives weighed: keyspace notifications cover every list
// with one connection but need notify-keyspace-events, a server-wide setting that managed Redis
// often forbids; BLMOVE into a per-worker in-flight list takes the message out of kombu's sight
// (a Python worker could not restore it) and needs a second step to record it; blocking on the
// priority-0 lists alone would leave priority messages waiting; polling (the former behaviour)
// costs about 100 commands a second per idle worker (its scripts' RPOPs counted) and up to 50 ms
// of latency. WorkerConfig.PollOnly keeps polling, and on Redis older than 6.2, which has no
// BLMOVE, the worker polls by itself.
//
// The costs, measured with INFO commandstats on 2 cores shared with other work
// (BenchmarkIdleCost, BenchmarkIdleStampede):
//   - connections: four per queue per idle worker (each returns to the pool when its waiter
//     fires);
//   - idle load: each wait is renewed every WorkerConfig.IdleWait (2 s), when the worker also
//     fetches once (which picks up queues added at runtime). One idle worker on one queue made
//     6.6 commands a second, heartbeats and sweeps included, against 100.5 when polling, and
//     1.5 for an idle Celery 5.7.0 worker (one BRPOP a second);
//   - several idle workers on one queue all wake for each message, since BLMOVE leaves it in
//     place for the next blocked client: each runs one fetch script and one of them gets the
//     message. With 16 idle Go workers, a message cost 15.5 BLMOVE replies and 17.6 fetch
//     scripts (all but one of them empty), 1.9 ms p50 from send to result; kombu's BRPOP wakes
//     one worker. Only idle workers wait: a busy worker fetches without waiting, so the
//     stampede shrinks as load grows. 16 idle workers cost Redis about 100 commands a second
//     in all, where polling cost about 100 each.
//
// A Python worker blocked in BRPOP on the same list still gets its share: BLMOVE puts the
// message back before Redis serves the next blocked client.
//
// Python producer to idle Go worker latency (BenchmarkIdleLatency) is bounded below by the
// producer itself: send_task plus get() of a result already stored takes about 2 ms p50 here.
//
// A Go worker refreshes the unacked_index score of every message it holds (running, prefetched or
// waiting for an ETA) every quarter of the visibility timeout, so a short visibility timeout is
// safe for its own work: the sweep only restores messages whose holder stopped refreshing, that is,
// died. It cannot protect a Python worker's in-flight messages, which Python does not refresh:
// with Python workers on the same queues, keep the visibility timeout above your longest task and
// ETA, as Celery's documentation asks.
//
// With acks_late (the default), a task's effects happen in Celery's order: publish link
// callbacks and the next chain step, store the result, fire the task_success / task_failure hooks
// (where the callback outbox records the callback), and only then acknowledge. A crash before the
// acknowledgement runs the task again; every later step is idempotent by task id.
package celerybridge
