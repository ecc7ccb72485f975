// Package rig is the logic of the three example services that rebuild the original Python rig in
// Go: the task API (examples/main_api, :8000), the callback receiver (examples/callback_receiver,
// :8001) and the worker (examples/worker). Each main is a few lines around this package, and the
// demo runs all three in one process with it.
//
// The services interoperate with the original Python files in examples/python: a Python worker
// (tasks.py) runs what the Go API submits, the Go worker runs what the Python main_api.py
// submits, and either worker's callbacks reach either receiver. Both sides read the same
// environment variables (see ConfigFromEnv):
//
//	CELERY_BROKER_URL / REDIS_URL            broker (the first set wins, as in Celery), default
//	                                         redis://127.0.0.1:6379/0
//	CELERY_RESULT_BACKEND / RESULT_URL       result backend, default: the broker URL (as tasks.py)
//	CALLBACK_URL                             default http://127.0.0.1:8001/receive-task-result
//	TASK_SLEEP                               seconds per task (float), default 1
//	CONCURRENCY                              worker concurrency, default 1
//	PORT                                     HTTP port, default 8000 (API) / 8001 (receiver)
//	CALLBACK_SECRET                          HMAC secret shared by the Go worker and Go receiver
//	FAIL_EVERY                               Go worker: every n-th task fails on purpose
//	CALLBACK_DB                              receiver: SQLite file, default callbacks.db; postgres://… for PostgreSQL
//	MAX_BODY_BYTES, RESULT_EXPIRES, SHUTDOWN_TIMEOUT
//	HOST                                     HTTP listen address, default 127.0.0.1; 0.0.0.0 every interface
//	WARM_SHUTDOWN_TIMEOUT                    Go worker: bound on the warm shutdown, default 0 (none)
//	HEADER_TIMEOUT, READ_TIMEOUT, IDLE_TIMEOUT, MAX_HEADER_BYTES, MAX_CONCURRENT, REDIS_TIMEOUT
//	                                         the limits below
//
// # API (NewAPI)
//
//	POST /submit-task          any JSON object, Content-Type application/json → 200 {"code",
//	                           "message", "business_task_id", "celery_task_id"}; 400 not a JSON
//	                           object or nested too deep; 413 too large (the body, or the callback
//	                           the task would send); 415 not application/json; 503 Redis (or
//	                           RabbitMQ, when it is the broker) down, or too many requests in
//	                           progress
//	GET  /task-status/{id}     business or Celery id → {"code", "business_task_id", "celery_task_id",
//	                           "status", "result", "error", "retries", "worker"}; 404 never submitted
//	GET  /healthz              Redis PING (and a RabbitMQ round trip when RabbitMQ is the broker):
//	                           200, or 503 within a second (down or hung)
//	GET  /metrics              Prometheus text: queue depth, submissions, callback outbox
//	                           (state="dead": callbacks the worker gave up on)
//	GET  /callbacks/dead       those dead letters, with reason and payload (?limit=, ≤ 1000)
//	POST /callbacks/dead/replay {"event_ids": [...]}, or {} for all → delivered again by the
//	                           running worker's dispatcher; {"replayed", "unknown"}
//
// Every error answer is {"code", "message"} with a plain message: the cause is logged, never
// answered.
//
// Errors differ from the original on purpose: every error is a flat {"code": <HTTP status>,
// "message"} with that status, and an id never submitted is a real 404. The original answers it
// with a 500 whose FastAPI body nests the 404 ({"detail": {"code": 500, "message": "查询失败：404:
// ..."}}), and nests its other errors in "detail" too; its clients read "message" and check for
// 404 instead.
//
// Submitting sends tasks.process_task with kwargs {"task_id": <business id>, "data": <the object>},
// exactly as the original process_task.delay(task_id=..., data=...). Status is read from the result
// backend (a Go worker stores STARTED and, with result_extended, the worker and retries), so it
// answers in a millisecond for queued, running and finished tasks alike, where the original's
// inspect broadcast took two seconds and knew only running ones.
//
// # Receiver (NewReceiver)
//
//	POST /receive-task-result  callback.NewHandler: signature check, dedupe, store
//	GET  /callbacks/{id}       the stored callbacks of a task (business or Celery id, percent-
//	                           encoded as needed; it may contain '/'); 404 none
//	GET  /callbacks/stats      {"received", "unique", "duplicates", "by_status"}
//	GET  /healthz
//
// # Worker (NewWorker)
//
// tasks.process_task(task_id, data) sleeps TaskSleep and returns the original's result
// {"status": "success", "business_task_id", "data", "message": "任务执行完成", "process_time"}.
// It runs with prefetch 1, acks_late, track_started (STARTED stored once a task has run
// StartedAfter, 10 ms) and result_extended; its callbacks go through the durable outbox
// (callback/celeryhook) and a Dispatcher in the same process, which waits CallbackLinger (20 ms)
// after a task finishes to send the callbacks that follow with it. To see failures,
// submit data with "fail": true, or set FAIL_EVERY: the task raises ValueError (a real Python
// ValueError for Python readers) and a "failed" callback follows.
//
// # Limits
//
// Both HTTP services hold against slow, broken and hostile clients within these bounds (Config;
// tests: hostile_test.go, fuzz_test.go):
//
//	headers          HEADER_TIMEOUT 5 s to arrive, MAX_HEADER_BYTES 16 KiB (431 beyond)
//	request          READ_TIMEOUT 15 s for the whole request, body included (a 1 MiB body
//	                 needs ~70 KB/s); a kept-alive connection idles IDLE_TIMEOUT 60 s
//	body             MAX_BODY_BYTES 1 MiB (413), read as it arrives, never reserved from
//	                 Content-Length
//	concurrency      MAX_CONCURRENT 64 bodies read and handled at once per service (so at most
//	                 64 MiB of bodies); beyond, a request waits up to HEADER_TIMEOUT for a slot,
//	                 then gets 503 with Retry-After
//	task data        nested at most MaxDataDepth (200) levels (400 beyond); and small enough
//	                 that its callback fits MAX_BODY_BYTES as either worker writes it (Python's
//	                 ensure_ascii turns a CJK character's 3 bytes into 6): 413 otherwise, so
//	                 every task the API accepts can report back
//	Redis            REDIS_TIMEOUT 2 s per Redis step of an API request: a submission answers
//	                 503 within about twice that when Redis hangs, /healthz within 800 ms; the
//	                 id mapping and the task's publish are scripts that refuse to write once
//	                 their deadline has passed by Redis's clock, so a submission answered 503
//	                 leaves nothing behind even when a paused Redis resumes and runs it (API and
//	                 Redis clocks must agree to well within REDIS_TIMEOUT; see NewAPI for the
//	                 lost-reply case). Pooled connections idle for 1 s,
//	                 or older than a broken one, are PINGed (500 ms deadline) before use, and
//	                 idempotent steps (id mapping, status reads, PING) retry once on a broken
//	                 connection, so a Redis restart does not fail requests
//	ids              /task-status/{id} and /callbacks/{id} up to 200 bytes
//
// The worker's callbacks that still fail for good (a receiver answering 4xx, or out of
// attempts) are dead letters: counted in /metrics, listed by GET /callbacks/dead and in the load
// tester's consistency report, and sent again by POST /callbacks/dead/replay (or
// callback.Outbox.Replay).
//
// Messages come from the original, whose Chinese text lost some characters in the document's
// re-encoding; they are restored here (see MsgSubmitted and the others).
package rig
