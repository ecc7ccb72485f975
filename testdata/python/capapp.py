"""capapp: the Celery app that celerybridge's interop tests run on both Python peers.

Works with Celery 5.2.6 (Debian, /usr/bin/python3) and Celery 5.7.0 (the project venv).
Configured from the environment (read once, at import):

  BROKER_URL              broker, default redis://127.0.0.1:6379/0
  BACKEND_URL             result backend, default redis://127.0.0.1:6379/1
  CAP_ACKS_LATE           1 -> task_acks_late (and task_reject_on_worker_lost)
  CAP_VISIBILITY_TIMEOUT  seconds -> broker_transport_options["visibility_timeout"]
  CAP_TRACK_STARTED       1 -> task_track_started (STARTED is stored before a task runs)
  CAP_PREFETCH            int -> worker_prefetch_multiplier
  CAP_RESULT_EXTENDED     1 -> result_extended (name, args, kwargs, worker, ... in the result)
  CAP_TASK_PROTOCOL       1 or 2 -> task_protocol used when sending
  CAP_SEND_SENT_EVENT     1 -> task_send_sent_event
  CAP_RESULT_EXPIRES      seconds -> result_expires (default: Celery's, one day)
  CAP_TIMEZONE            timezone (default UTC; enable_utc stays on)
  CAP_CONFIRM_PUBLISH     1 -> broker_transport_options["confirm_publish"] (py-amqp waits for the
                          broker's confirm of every publish)
  CAP_MASTER_NAME         Sentinel master name -> master_name in broker_transport_options and
                          result_backend_transport_options (for sentinel:// URLs)

JSON is the only serializer and the only accepted content type.

Tasks (all names are explicit; tests address them by name):
  cap.add(x, y)                 -> x + y
  cap.echo(*args, **kwargs)     -> {"args": args, "kwargs": kwargs}
  cap.fail()                    raises capapp.MyError('boom')
  cap.fail_value()              raises ValueError('bad', 42)
  cap.retry_me(x=7)             retries (countdown 1 s, exc MyError('try again N')) until
                                request.retries == 2, then returns x * 10
  cap.sleep(n)                  sleeps n seconds, returns n
  cap.tsum(values, extra=0)     -> sum(values) + extra (chord body)
  cap.record(*args, **kwargs)   appends a JSON record of the request to the Redis list
                                RAN_KEY ("cap:ran") in the backend DB and returns it
  cap.record_sleep(seconds, *args, **kwargs)
                                record(), then sleeps `seconds` (for crash / restore tests)
  cap.on_err(task_id)           errback with one argument; records like cap.record
  cap.on_err3(request, exc, tb) errback Celery calls inline; records {failed_id, exc, inline}
"""

import json
import os
import socket
import time

import celery
from celery import Celery

BROKER_URL = os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0")
BACKEND_URL = os.environ.get("BACKEND_URL", "redis://127.0.0.1:6379/1")

#: Redis list (in the backend DB) that cap.record / cap.record_sleep / cap.on_err append to.
RAN_KEY = "cap:ran"


class MyError(Exception):
    """The exception cap.fail raises; stored as exc_type "MyError", exc_module "capapp"."""


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_num(name, conv=int):
    value = os.environ.get(name, "").strip()
    return conv(value) if value else None


def build_config(**overrides):
    """The Celery configuration for capapp, from the environment plus overrides."""
    conf = dict(
        broker_url=BROKER_URL,
        result_backend=BACKEND_URL,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        enable_utc=True,
        timezone=os.environ.get("CAP_TIMEZONE") or "UTC",
    )
    if tuple(int(p) for p in celery.__version__.split(".")[:2]) >= (5, 3):
        conf["broker_connection_retry_on_startup"] = True  # silences a 5.3+ deprecation warning
    if _env_flag("CAP_ACKS_LATE"):
        conf.update(task_acks_late=True, task_reject_on_worker_lost=True)
    vt = _env_num("CAP_VISIBILITY_TIMEOUT", float)
    if vt is not None:
        conf["broker_transport_options"] = {"visibility_timeout": vt}
    if _env_flag("CAP_CONFIRM_PUBLISH"):
        conf.setdefault("broker_transport_options", {})["confirm_publish"] = True
    master = os.environ.get("CAP_MASTER_NAME", "").strip()
    if master:
        conf.setdefault("broker_transport_options", {})["master_name"] = master
        conf["result_backend_transport_options"] = {"master_name": master}
    if _env_flag("CAP_TRACK_STARTED"):
        conf["task_track_started"] = True
    prefetch = _env_num("CAP_PREFETCH")
    if prefetch is not None:
        conf["worker_prefetch_multiplier"] = prefetch
    if _env_flag("CAP_RESULT_EXTENDED"):
        conf["result_extended"] = True
    protocol = _env_num("CAP_TASK_PROTOCOL")
    if protocol is not None:
        conf["task_protocol"] = protocol
    if _env_flag("CAP_SEND_SENT_EVENT"):
        conf["task_send_sent_event"] = True
    expires = _env_num("CAP_RESULT_EXPIRES")
    if expires is not None:
        conf["result_expires"] = expires
    conf.update(overrides)
    return conf


# Request attributes that are Celery's own, not custom headers (the union over 5.2 and 5.7).
_CELERY_REQUEST_KEYS = frozenset(
    """
    lang task id shadow eta expires group group_index retries timelimit root_id parent_id argsrepr
    kwargsrepr origin ignore_result stamped_headers stamps replaced_task_nesting redelivered meth
    compression properties reply_to correlation_id hostname delivery_info args kwargs embed
    callbacks errbacks chain chord called_directly is_eager logfile loglevel headers taskset utc
    time_limit soft_time_limit periodic_task_name
    """.split()
)


def custom_headers(request):
    """The custom headers (apply_async(headers=...)) a task received, the same on 5.2 and 5.7."""
    skip = _CELERY_REQUEST_KEYS | set(type(request).__dict__)
    return {
        k: v
        for k, v in vars(request).items()
        if not k.startswith("_") and k not in skip
    }


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def request_record(task, args, kwargs, **extra):
    """What cap.record stores: the request as the worker saw it."""
    req = task.request
    delivery_info = req.delivery_info or {}
    rec = {
        "id": req.id,
        "task": task.name,
        "args": _jsonable(list(args)),
        "kwargs": _jsonable(dict(kwargs)),
        "worker": req.hostname,
        "headers": _jsonable(custom_headers(req)),
        "eta": _jsonable(req.eta),
        "expires": _jsonable(req.expires),
        "retries": req.retries,
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "group": req.group,
        "redelivered": bool(delivery_info.get("redelivered") or getattr(req, "redelivered", False)),
        "routing_key": delivery_info.get("routing_key"),
        "priority": delivery_info.get("priority"),
        "pid": os.getpid(),
        "time": time.time(),
    }
    rec.update(extra)
    return rec


def register_tasks(app):
    """Registers the cap.* tasks on app."""

    @app.task(shared=False, name="cap.add")
    def add(x, y):
        return x + y

    @app.task(shared=False, name="cap.echo")
    def echo(*args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    @app.task(shared=False, name="cap.fail")
    def fail(*args, **kwargs):
        raise MyError("boom")

    @app.task(shared=False, name="cap.fail_value")
    def fail_value(*args, **kwargs):
        raise ValueError("bad", 42)

    @app.task(shared=False, name="cap.retry_me", bind=True, max_retries=5)
    def retry_me(self, x=7):
        if self.request.retries < 2:
            raise self.retry(exc=MyError("try again %d" % self.request.retries), countdown=1)
        return x * 10

    @app.task(shared=False, name="cap.sleep")
    def sleep(n):
        time.sleep(n)
        return n

    @app.task(shared=False, name="cap.tsum")
    def tsum(values, extra=0):
        return sum(values) + extra

    @app.task(shared=False, name="cap.record", bind=True)
    def record(self, *args, **kwargs):
        rec = request_record(self, args, kwargs)
        self.app.backend.client.rpush(RAN_KEY, json.dumps(rec))
        return rec

    @app.task(shared=False, name="cap.record_sleep", bind=True)
    def record_sleep(self, seconds, *args, **kwargs):
        rec = request_record(self, (seconds,) + tuple(args), kwargs, phase="start")
        self.app.backend.client.rpush(RAN_KEY, json.dumps(rec))
        time.sleep(seconds)
        rec.update(phase="end", time=time.time())
        self.app.backend.client.rpush(RAN_KEY, json.dumps(rec))
        return rec

    @app.task(shared=False, name="cap.on_err", bind=True)
    def on_err(self, task_id):
        rec = request_record(self, (task_id,), {})
        self.app.backend.client.rpush(RAN_KEY, json.dumps(rec))
        return task_id

    @app.task(shared=False, name="cap.on_err3")
    def on_err3(request, exc, traceback):
        # Three parameters: a Python worker that knows this task calls it inline on failure.
        rec = {"task": "cap.on_err3", "failed_id": getattr(request, "id", None),
               "exc": type(exc).__name__, "inline": True}
        app.backend.client.rpush(RAN_KEY, json.dumps(rec))
        return rec

    return dict(add=add, echo=echo, fail=fail, fail_value=fail_value, retry_me=retry_me,
                sleep=sleep, tsum=tsum, record=record, record_sleep=record_sleep, on_err=on_err,
                on_err3=on_err3)


def quiet_exit(app):
    """Drops the pending AsyncResults while the interpreter is intact: on 5.7 with redis-py 8,
    their __del__ at interpreter shutdown prints an ImportError traceback to stderr."""
    import gc

    pending = getattr(getattr(app.backend, "result_consumer", None), "_pending_results", ())
    for d in pending if isinstance(pending, tuple) else (pending,):
        try:
            d.clear()
        except AttributeError:
            pass
    gc.collect()
    try:
        app.backend.result_consumer.stop()
    except Exception:
        pass
    app.close()


def create_app(set_as_current=True, **overrides):
    """A new Celery app named "cap" with the cap.* tasks; overrides go into its configuration."""
    app = Celery("cap", set_as_current=set_as_current)
    app.conf.update(build_config(**overrides))
    register_tasks(app)
    return app


app = create_app()
_tasks = app.tasks
add = _tasks["cap.add"]
echo = _tasks["cap.echo"]
fail = _tasks["cap.fail"]
fail_value = _tasks["cap.fail_value"]
retry_me = _tasks["cap.retry_me"]
sleep = _tasks["cap.sleep"]
tsum = _tasks["cap.tsum"]
record = _tasks["cap.record"]
record_sleep = _tasks["cap.record_sleep"]
on_err = _tasks["cap.on_err"]

HOSTNAME = socket.gethostname()
