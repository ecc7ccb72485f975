// Package callback delivers task results as signed HTTP callbacks, reliably, and receives them.
//
// It replaces the original rig's task_success/task_failure signal handlers, which POSTed
// {task_id, status, result, error, timestamp} once with requests.post(..., timeout=10) and
// printed and swallowed any failure. Here the callback is written to a durable outbox in Redis
// before the task is acked, delivered by a Dispatcher with retries, leases and dead letters, and
// deduplicated by the receiver. The package depends on the standard library, redigo for the
// outbox and fasthttp for the dispatcher's default HTTP client; it imports no database driver
// and no web framework (mount the handler, a plain http.Handler, in echo with echo.WrapHandler).
//
// Why fasthttp: on the 2-core machine the benchmarks run on, net/http's client (a reader and a
// writer goroutine per connection) cost about a fifth more CPU per callback, CPU taken from the
// workers the dispatcher runs beside. It does not read HTTP_PROXY and the like; set
// DispatcherConfig.Client to send through a net/http client instead (proxies, custom TLS,
// instrumented transports). Both refuse redirects, and both send a request once more on a new
// connection when a kept-alive one turns out closed (safe: the receiver dedupes by
// Idempotency-Key).
//
// # Sending
//
//	ob, err := callback.NewOutbox(pool, callback.OutboxConfig{URL: "http://127.0.0.1:8001/receive-task-result"})
//	d, err := callback.NewDispatcher(ob, callback.DispatcherConfig{Secret: secret})
//	go d.Run(ctx)                 // or in a process of its own; Shutdown(ctx) drains
//	...
//	// in the worker's success/failure hook, before the ack:
//	err = ob.Enqueue(ctx, callback.Event{CeleryTaskID: id, TaskID: businessID, TaskName: name,
//		Status: callback.StatusSuccess, Result: result})
//
// Enqueue is idempotent by event id, and the event id is derived from the task id sent ("task_id":
// the business id, else the Celery id) and the outcome (EventID), never random. So every order of crashes works out: a crash before Enqueue
// re-runs the task, which enqueues the same id; a crash after it leaves the event in Redis for
// any dispatcher; a dispatcher killed mid-request leaves a lease that expires, after which the
// event is sent again with the same id; and the receiver stores each id once. Delivery is
// therefore at least once on the wire and exactly once in the store of a receiver that dedupes
// by event id (NewHandler does; the original Python receiver does not, so after a crash it may
// print a callback twice). How durable an
// enqueued event is depends on Redis persistence: use appendonly yes (appendfsync everysec
// loses at most about a second of enqueues if Redis itself crashes; always loses none).
//
// # Wire format
//
// Each attempt is one request:
//
//	POST <url>
//	Content-Type: application/json
//	Idempotency-Key: <event id>
//	User-Agent: celerybridge-callback/1
//	X-Celerybridge-Timestamp: <unix seconds>           (only with a secret)
//	X-Celerybridge-Signature: v1=<64 lowercase hex>     (only with a secret)
//
//	{"task_id": "<kwargs task_id, else the Celery id>", "status": "success" | "failed",
//	 "result": <any JSON; null on failure>, "error": null | "<str(exception)>",
//	 "timestamp": "2025-12-19T12:44:01.108512+08:00", "celery_task_id": "<Celery id>",
//	 "task_name": "tasks.process_task", "event_id": "<32 hex>", "attempt": 1}
//
// The first five fields keep the original names and meanings (timestamp is now RFC 3339 with
// nanoseconds and zone instead of a zoneless "%Y-%m-%d %H:%M:%S"), so the original FastAPI
// receiver accepts these requests unchanged. event_id is the first 32 hex digits of
// SHA-256("<task_id>:<status>"), the id a receiver derives for a callback that carries none (the
// original Python sender's), so one outcome sent by either kind of worker is stored once;
// attempt counts delivery attempts from 1. The body is UTF-8 JSON without HTML escaping: '<',
// '>' and '&' are sent as themselves, so a callback is not six times the size of such content.
//
// A 2xx answer completes delivery. Network errors, timeouts (DispatcherConfig.Timeout, default
// 10 s), 408, 429 and 5xx are retried with exponential backoff and jitter; a Retry-After header
// (seconds or HTTP date) sets the delay instead. Any other status (other 4xx, and 3xx: redirects
// are never followed) dead-letters the event at once with the reason, as does running out of
// attempts (MaxAttempts) or age (MaxAge). DeadLetters lists them and Replay puts them back.
//
// Destinations: events go to OutboxConfig.URL unless they name their own URL, which must then
// match OutboxConfig.AllowedURLs (exact URL, or scheme+host+path prefix for entries ending in
// "/"); anything else is refused at Enqueue with a *URLError, so a task cannot make the worker
// call arbitrary hosts.
//
// # Signature
//
// With a secret configured (DispatcherConfig.Secret on the sender, HandlerConfig.Secret on the
// receiver) every request carries
//
//	X-Celerybridge-Timestamp: T   the signing time, decimal Unix seconds
//	X-Celerybridge-Signature: v1=hex(HMAC-SHA256(secret, T + "." + raw body))
//
// where the MAC input is the ASCII digits of T, one "." byte, then the request body bytes exactly
// as sent (verify before parsing or re-encoding the JSON). The hex is lowercase. The header may
// hold several comma-separated "v1=" entries (for key rotation); the request is authentic if any
// matches. A receiver must compare in constant time and reject a T more than a tolerance (5
// minutes by default) from its clock, either way; together with the event id dedupe this stops
// replays. In Python (FastAPI shown):
//
//	import hashlib, hmac, time
//	from fastapi import FastAPI, HTTPException, Request
//
//	SECRET = b"the shared secret"
//	TOLERANCE = 300  # seconds
//
//	def verify(secret: bytes, timestamp: str, signature: str, body: bytes, now: float) -> bool:
//	    if not timestamp or not signature:
//	        return False
//	    try:
//	        ts = int(timestamp)
//	    except ValueError:
//	        return False
//	    if abs(now - ts) > TOLERANCE:
//	        return False
//	    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
//	    expected = b"v1=" + mac.hexdigest().encode("ascii")
//	    return any(hmac.compare_digest(expected, part.strip().encode("utf-8", "replace"))
//	               for part in signature.split(","))
//
//	app = FastAPI()
//
//	@app.post("/receive-task-result")
//	async def receive(request: Request):
//	    body = await request.body()  # the raw bytes, before any JSON parsing
//	    if not verify(SECRET, request.headers.get("X-Celerybridge-Timestamp", ""),
//	                  request.headers.get("X-Celerybridge-Signature", ""), body, time.time()):
//	        raise HTTPException(status_code=401, detail="bad signature")
//	    data = await request.json()
//	    ...  # dedupe on data["event_id"] (or Idempotency-Key) before applying
//	    return {"code": 200, "message": "received", "received_data": data}
//
// The Go side of the same check is Verify; Sign produces the header.
//
// # Receiving
//
// NewHandler returns an http.Handler: POST only, signature check when a secret is set, body size
// limit, validation with a 400 saying what is wrong, and dedupe by event id (derived from
// task_id and status when the sender sends none, as the original Python handler does), so each
// callback reaches HandlerConfig.OnCallback and the Store once. Answers mirror the original:
// {"code": 200, "message": ..., "received_data": <the callback>}. The Store interface and
// NewMemoryStore (for tests and demos) are here; stores that keep callbacks across restarts
// live in their own packages, so a worker that only sends callbacks compiles no database
// driver: callback/sqlitestore (modernc.org/sqlite, pure Go, group-committed) and
// callback/pgstore (PostgreSQL, one database shared by several receivers). Every store passes
// the conformance suite in callback/storetest. OnCallback costs
// a look-up per request to tell new events from repeats; to merely log or count new callbacks,
// wrap the Store and act when Save reports an insert (examples/internal/rig does).
//
// # Limits
//
// The receiver holds against slow and hostile clients within these bounds (HandlerConfig):
//
//	body             MaxBodyBytes, default 1 MiB (413 beyond); read as it arrives, never
//	                 reserved from Content-Length; a body shorter than announced is a 400
//	requests         MaxConcurrent, default 64, read and handled at once, so at most
//	                 MaxConcurrent × MaxBodyBytes of bodies are held; beyond, a request waits
//	                 QueueTimeout (default 5 s) for a slot, then gets 503 with Retry-After: 1
//	                 (the Dispatcher retries it)
//	ids              task_id and event_id up to 255 bytes (400 beyond)
//	signature        timestamps within Tolerance (default 5 min) either way
//	answers          a 500 (store or OnCallback failed) says "callback not stored; retry
//	                 later" and logs the cause: no internal error text reaches the client
//
// Header size and the header, read and idle timeouts belong to the http.Server the handler is
// mounted in; set them (ReadHeaderTimeout, ReadTimeout, IdleTimeout, MaxHeaderBytes): the
// handler cannot. examples/internal/rig does.
//
// # Redis keys
//
// All keys share a prefix (OutboxConfig.Prefix, default "celerybridge.callback."):
//
//	<prefix>events     hash    event id → record "cb1 <created ms>\n<url>\n<payload JSON>"
//	<prefix>due        zset    event id → next attempt time (Unix ms); pending events
//	<prefix>leased     zset    event id → lease deadline (Unix ms); in-flight events
//	<prefix>attempts   hash    event id → attempts so far
//	<prefix>since      hash    event id → start of MaxAge (Unix ms)
//	<prefix>last       hash    event id → last failure {"status", "error", "at"}
//	<prefix>dead       zset    event id → dead-letter time (Unix ms)
//	<prefix>dead.info  hash    event id → {"reason", "last_status", "last_error", "attempts"}
//	<prefix>delivered  zset    event id → delivery time (Unix ms), trimmed after DeliveredRetention
//
// Every transition is one Lua script (scripts.go), so an event is always in exactly one of due,
// leased and dead. Outbox.Stats reports the counts (for a /metrics endpoint or a backlog alert).
// Times come from the injected clock of each process, so dispatcher hosts' clocks must agree to
// well within Lease - Timeout (30 s by default).
package callback
