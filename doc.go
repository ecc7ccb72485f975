// Package celerybridge lets Go programs join a Python Celery deployment over Redis as equals:
// Go producers send tasks that Python workers run, Go workers run tasks that Python producers
// send, results and crash recovery work across both, and Celery's own tools see Go workers.
//
// This root package holds documentation and the wire-vector tests only. The code is in:
//
//   - [github.com/celerybridge/celerybridge/celerycompat]: Celery's message protocol (1 and 2),
//     the kombu Redis transport (publish, priorities, fair multi-queue fetch, ack emulation,
//     visibility-timeout restore), the Redis result backend (including the PUBLISH that wakes
//     Python's AsyncResult.get()), a producer, a worker and hooks that mirror Celery's signals.
//   - [github.com/celerybridge/celerybridge/callback]: reliable, signed HTTP result callbacks
//     (a durable Redis outbox) and the http.Handler that receives them exactly once.
//   - examples/: the original FastAPI + Celery test rig rebuilt in Go (echo v4, redigo), the
//     original Python tasks to mix with it, a load tester and a one-command demo.
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
// The cost: blocking pops would reopen the window, so while every queue is empty the worker
// polls, starting at 1 ms and doubling up to WorkerConfig.PollInterval (50 ms by default). An idle
// worker therefore sends about 20 cheap script calls a second, and a task sent to an idle worker
// waits up to one interval before it is fetched; a busy worker never waits.
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
