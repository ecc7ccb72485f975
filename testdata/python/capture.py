"""Captures golden wire vectors from real Celery into testdata/wire/<celery version>/.

  capture.py redis://127.0.0.1:6399 [--out DIR] [--only CASE ...] [--skip-results] [--list]

Run it with each peer's interpreter (/usr/bin/python3 for 5.2.6, .venv/bin/python for 5.7.0);
`make capture` does both. It needs a redis-server of its own: databases 0 and 1 of the URL are
flushed over and over (0 = broker, 1 = result backend).

Messages (no worker running): each case publishes with the real Celery producer into a flushed
broker DB, then every list element is written byte for byte as LRANGE returned it:
  <case>.msg.json      the stored element (kombu envelope, JSON text), no trailing newline
  <case>.expect.json   {"case", "call", "list" (the Redis list key), "envelope" (parsed),
                        "body" (base64-decoded, decompressed, JSON-parsed; for msgpack/pickle an
                        object with the mime type and a note), "body_info", "keys_after",
                        "bindings", "sent_at", "celery_version", "kombu_version", ...}
  A case that publishes several messages writes <case>-0, <case>-1, ... in publish order.
  <case>.error.json    the producer refused the case (e.g. bytes arguments on kombu 5.2)
Results (a real solo worker of capapp): the value stored under celery-task-meta-<id>, exactly:
  <case>.result.json   {"case", "call", "key", "raw", "ttl", "expect": {...}, "python_view"}
  <case>.unacked.json  an entry of kombu's unacked hash (the retried message), with its score
"""

import argparse
import base64
import bz2
import datetime as dt
import decimal
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "wire"))
UTC = dt.timezone.utc
PATTERNS = ("*.msg.json", "*.expect.json", "*.result.json", "*.error.json", "*.unacked.json")


T_START = time.time()


def log(msg):
    sys.stderr.write("capture: %6.2fs %s\n" % (time.time() - T_START, msg))
    sys.stderr.flush()


def fixed_id(n):
    """Deterministic task ids, so vectors of both versions line up: 00000000-0000-4000-8000-<n>."""
    return "00000000-0000-4000-8000-%012d" % n


# --------------------------------------------------------------------------------------------
# body decoding

def decompress(mime, data):
    if mime in ("application/x-gzip", "zlib", "gzip"):
        return zlib.decompress(data)
    if mime in ("application/x-bz2", "bzip2"):
        return bz2.decompress(data)
    raise ValueError("unknown compression %r" % mime)


def jsonable(value):
    if isinstance(value, bytes):
        return {"bytes_base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def decode_body(env):
    """-> (body, body_info). body is the parsed JSON payload for JSON messages."""
    props, headers = env.get("properties") or {}, env.get("headers") or {}
    raw = env["body"]
    info = {"content_type": env.get("content-type"), "content_encoding": env.get("content-encoding"),
            "body_encoding": props.get("body_encoding")}
    data = base64.b64decode(raw) if props.get("body_encoding") == "base64" else raw.encode("utf-8")
    if headers.get("compression"):
        info["compression"] = headers["compression"]
        info["compressed_len"] = len(data)
        data = decompress(headers["compression"], data)
    info["payload_len"] = len(data)
    ct = env.get("content-type")
    if ct == "application/json":
        text = data.decode("utf-8")
        info["payload_text"] = text
        return json.loads(text), info
    if ct == "application/x-msgpack":
        body = {"mime": ct, "note": "msgpack payload; 'decoded' is what msgpack.unpackb gives "
                                    "(bytes shown as bytes_base64)",
                "payload_base64": base64.b64encode(data).decode()}
        try:
            import msgpack

            body["decoded"] = jsonable(msgpack.unpackb(data, raw=False))
        except Exception as exc:  # pragma: no cover - msgpack missing
            body["decode_error"] = repr(exc)
        return body, info
    if ct == "application/x-python-serialize":
        return {"mime": ct, "note": "pickle payload: a poison sample for consumers that must "
                                    "reject it; never unpickle it (not decoded here either)",
                "payload_base64": base64.b64encode(data).decode()}, info
    return {"mime": ct, "note": "unknown content type",
            "payload_base64": base64.b64encode(data).decode()}, info


# --------------------------------------------------------------------------------------------
# writing

class Writer:
    def __init__(self, out_dir, meta):
        self.out_dir = out_dir
        self.meta = meta
        self.written = []

    def write(self, name, data):
        path = os.path.join(self.out_dir, name)
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(path, mode) as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                json.dump(data, f, indent=2, sort_keys=False, ensure_ascii=True)
                f.write("\n")
        self.written.append(name)

    def with_meta(self, doc):
        out = dict(doc)
        out.update(self.meta)
        return out


def redis_text(b):
    return b.decode("utf-8") if isinstance(b, bytes) else b


def broker_snapshot(r):
    keys, bindings, lists = {}, {}, {}
    for k in sorted(r.keys("*")):
        name = redis_text(k)
        kind = redis_text(r.type(k))
        keys[name] = kind
        if kind == "set" and name.startswith("_kombu."):  # .binding. and (5.7) .binding_permanent.
            bindings[name] = sorted(redis_text(m) for m in r.smembers(k))
        if kind == "list":
            lists[name] = r.lrange(k, 0, -1)
    return keys, bindings, lists


# --------------------------------------------------------------------------------------------
# the Redis commands Celery sends (MONITOR), reduced to distinct shapes

class CommandLog:
    """Records, through MONITOR, the shape of every command the Celery peers send (ids, numbers
    and payloads replaced by placeholders), skipping the harness's own connections."""

    LINE = None

    def __init__(self, url):
        import re
        import threading

        import redis

        self.re_line = re.compile(r'^([0-9.]+) \[(\d+) ([^\]]+)\] (.*)$', re.S)
        self.re_arg = re.compile(r'"((?:[^"\\]|\\.)*)"')
        self.re_uuid = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')
        self.re_hex = re.compile(r'\b[0-9a-f]{32}\b')
        self.re_num = re.compile(r'^-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?$')
        self.ignore = set()
        self.shapes = {}
        pool = redis.Redis.from_url(url).connection_pool
        try:
            self.conn = pool.get_connection()
        except TypeError:  # redis-py < 5.3 wants a command name
            self.conn = pool.get_connection("MONITOR")
        self.conn.send_command("MONITOR")
        self.conn.read_response()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def ignore_client(self, client):
        info = redis_text(client.execute_command("CLIENT", "INFO"))
        addr = [f for f in info.split() if f.startswith("addr=")][0][5:]
        self.ignore.add(addr)

    def _norm(self, arg):
        if arg.startswith(("{", "[")) or len(arg) > 64:
            return "<payload>"
        arg = self.re_uuid.sub("<uuid>", arg)
        arg = self.re_hex.sub("<hex>", arg)
        if self.re_num.match(arg):
            return "<n>"
        if "@" in arg and arg.startswith("gen"):
            return "<origin>"
        return arg

    def _run(self):
        while True:
            try:
                line = redis_text(self.conn.read_response())
            except Exception:
                return
            m = self.re_line.match(line)
            if not m:
                continue
            _, db, client, rest = m.groups()
            if client in self.ignore:
                continue
            raw = self.re_arg.findall(rest)
            if not raw:
                continue
            args = [raw[0].upper()] + [self._norm(a) for a in raw[1:]]
            if args[0] in ("MONITOR", "FLUSHDB") or args[:2] == ["CLIENT", "INFO"]:
                continue
            if args[0] in ("HELLO", "SELECT", "CLIENT"):  # connection setup: keep the values
                args = [args[0]] + raw[1:]
            shape = " ".join(args[:8]) + (" ... (%d args)" % len(args) if len(args) > 8 else "")
            if client == "lua":
                shape = "(lua) " + shape
            self.shapes[shape] = self.shapes.get(shape, 0) + 1

    def stop(self):
        time.sleep(0.2)
        try:
            self.conn.disconnect()
        except Exception:
            pass
        self.thread.join(2)
        return dict(sorted(self.shapes.items()))


# --------------------------------------------------------------------------------------------
# message cases

def message_cases(capapp, app1):
    """(name, python call as text, function) for every producer case."""
    from celery import chain, chord, group

    add, echo, on_err, tsum = capapp.add, capapp.echo, capapp.on_err, capapp.tsum
    T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cases = []

    def case(name, call):
        def deco(fn):
            cases.append((name, call, fn))
            return fn
        return deco

    @case("add", "add.apply_async((2, 3), task_id=ID)")
    def _():
        add.apply_async((2, 3), task_id=fixed_id(1))

    @case("kwargs_unicode", "echo.apply_async(('中文', '😀'), {'text': '你好，世界', 'emoji': '😀🚀', "
                            "'mixed': 'naïve café ß', 'rtl': 'مرحبا'}, task_id=ID)")
    def _():
        echo.apply_async(("中文", "😀"), {"text": "你好，世界", "emoji": "😀🚀",
                                         "mixed": "naïve café ß", "rtl": "مرحبا"},
                         task_id=fixed_id(2))

    @case("kwargs_nested", "echo.apply_async([1, 'two', 3.5, None, True, False], {nested...}, task_id=ID)")
    def _():
        echo.apply_async(
            [1, "two", 3.5, None, True, False],
            {"user": {"id": 7, "tags": ["a", "b"], "profile": {"age": 30, "scores": [1.5, 2, -3],
                                                              "active": False, "none": None}},
             "empty_list": [], "empty_obj": {}, "big": 2 ** 53 + 1, "neg": -1, "tiny": 1e-7,
             "deep": [[[{"x": [1, {"y": None}]}]]], "escapes": "quote\" backslash\\ nl\n tab\t"},
            task_id=fixed_id(3))

    @case("countdown", "add.apply_async((2, 3), countdown=60, task_id=ID)")
    def _():
        add.apply_async((2, 3), countdown=60, task_id=fixed_id(4))

    @case("eta_absolute", "add.apply_async((2, 3), eta=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), task_id=ID)")
    def _():
        add.apply_async((2, 3), eta=T0, task_id=fixed_id(5))

    @case("eta_naive", "add.apply_async((2, 3), eta=datetime(2030, 1, 2, 3, 4, 5), task_id=ID)  # naive")
    def _():
        add.apply_async((2, 3), eta=T0.replace(tzinfo=None), task_id=fixed_id(6))

    @case("eta_offset", "add.apply_async((2, 3), eta=datetime(2030, 1, 2, 11, 4, 5, tzinfo=UTC+8), task_id=ID)")
    def _():
        tz8 = dt.timezone(dt.timedelta(hours=8))
        add.apply_async((2, 3), eta=dt.datetime(2030, 1, 2, 11, 4, 5, tzinfo=tz8), task_id=fixed_id(7))

    @case("expires_seconds", "add.apply_async((2, 3), expires=120, task_id=ID)")
    def _():
        add.apply_async((2, 3), expires=120, task_id=fixed_id(8))

    @case("expires_absolute", "add.apply_async((2, 3), expires=datetime(2030, 1, 3, tzinfo=UTC), task_id=ID)")
    def _():
        add.apply_async((2, 3), expires=dt.datetime(2030, 1, 3, tzinfo=UTC), task_id=fixed_id(9))

    @case("countdown_expires", "add.apply_async((2, 3), countdown=60, expires=120, task_id=ID)")
    def _():
        add.apply_async((2, 3), countdown=60, expires=120, task_id=fixed_id(10))

    for i, prio in enumerate((0, 3, 5, 9)):
        def _prio(prio=prio, i=i):
            add.apply_async((2, 3), priority=prio, task_id=fixed_id(11 + i))
        case("priority_%d" % prio, "add.apply_async((2, 3), priority=%d, task_id=ID)" % prio)(_prio)

    @case("queue_other", "add.apply_async((2, 3), queue='other', task_id=ID)")
    def _():
        add.apply_async((2, 3), queue="other", task_id=fixed_id(15))

    @case("link_link_error", "add.apply_async((1, 2), link=add.s(5), link_error=on_err.s(), task_id=ID)")
    def _():
        add.apply_async((1, 2), link=add.s(5), link_error=on_err.s(), task_id=fixed_id(16))

    @case("link_multi_immutable", "add.apply_async((1, 2), link=[add.si(1, 1), echo.s()], task_id=ID)")
    def _():
        add.apply_async((1, 2), link=[add.si(1, 1), echo.s()], task_id=fixed_id(17))

    @case("chain3", "chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()  # fixed ids per step")
    def _():
        chain(add.s(1, 2).set(task_id=fixed_id(18)), add.s(10).set(task_id=fixed_id(19)),
              add.s(100).set(task_id=fixed_id(20))).apply_async()

    @case("chord", "chord([add.s(1, 1), add.s(2, 2)], tsum.s(1000)).apply_async()  # fixed ids")
    def _():
        chord([add.s(1, 1).set(task_id=fixed_id(21)), add.s(2, 2).set(task_id=fixed_id(22))],
              tsum.s(1000).set(task_id=fixed_id(23))).apply_async()

    @case("group", "group(add.s(1, 1), add.s(2, 2), add.s(3, 3)).apply_async()  # fixed ids")
    def _():
        group(add.s(1, 1).set(task_id=fixed_id(24)), add.s(2, 2).set(task_id=fixed_id(25)),
              add.s(3, 3).set(task_id=fixed_id(26))).apply_async(task_id=fixed_id(27))

    @case("headers_custom", "add.apply_async((2, 3), headers={'x-custom': 'hello', 'x-int': 42, "
                            "'x-obj': {'a': [1, 2]}}, task_id=ID)")
    def _():
        add.apply_async((2, 3), headers={"x-custom": "hello", "x-int": 42, "x-obj": {"a": [1, 2]}},
                        task_id=fixed_id(28))

    @case("shadow", "add.apply_async((2, 3), shadow='custom.shadow.name', task_id=ID)")
    def _():
        add.apply_async((2, 3), shadow="custom.shadow.name", task_id=fixed_id(29))

    @case("time_limits", "add.apply_async((2, 3), time_limit=30, soft_time_limit=20, task_id=ID)")
    def _():
        add.apply_async((2, 3), time_limit=30, soft_time_limit=20, task_id=fixed_id(30))

    @case("ignore_result", "add.apply_async((2, 3), ignore_result=True, task_id=ID)")
    def _():
        add.apply_async((2, 3), ignore_result=True, task_id=fixed_id(31))

    @case("protocol1_add", "app(task_protocol=1): add.apply_async((2, 3), task_id=ID)")
    def _():
        app1.tasks["cap.add"].apply_async((2, 3), task_id=fixed_id(32))

    @case("protocol1_chain", "app(task_protocol=1): chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()")
    def _():
        a1 = app1.tasks["cap.add"]
        chain(a1.s(1, 2).set(task_id=fixed_id(33)), a1.s(10).set(task_id=fixed_id(34)),
              a1.s(100).set(task_id=fixed_id(35))).apply_async()

    @case("types_datetime_uuid_decimal",
          "echo.apply_async([datetime(2030,1,2,3,4,5,tzinfo=UTC), datetime(2030,1,2,3,4,5,678901), "
          "date(2030,1,2), time(3,4,5), Decimal('1.5'), UUID('12345678-1234-5678-1234-567812345678')], "
          "{'when': datetime(..., tzinfo=UTC+8)}, task_id=ID)")
    def _():
        echo.apply_async(
            [T0, dt.datetime(2030, 1, 2, 3, 4, 5, 678901), dt.date(2030, 1, 2), dt.time(3, 4, 5),
             decimal.Decimal("1.5"), uuid.UUID("12345678-1234-5678-1234-567812345678")],
            {"when": dt.datetime(2030, 1, 2, 11, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))},
            task_id=fixed_id(36))

    @case("types_bytes", "echo.apply_async([b'text', b'raw\\xff'], task_id=ID)")
    def _():
        echo.apply_async([b"text", b"raw\xff"], task_id=fixed_id(37))

    @case("compression_zlib", "add.apply_async((2, 3), compression='zlib', task_id=ID)")
    def _():
        add.apply_async((2, 3), compression="zlib", task_id=fixed_id(38))

    @case("compression_bzip2", "add.apply_async((2, 3), compression='bzip2', task_id=ID)")
    def _():
        add.apply_async((2, 3), compression="bzip2", task_id=fixed_id(39))

    @case("serializer_msgpack", "echo.apply_async((2, 'x'), {'s': '你好'}, serializer='msgpack', task_id=ID)")
    def _():
        import msgpack  # noqa: F401 - a clear error when it is missing
        echo.apply_async((2, "x"), {"s": "你好"}, serializer="msgpack", task_id=fixed_id(40))

    @case("serializer_pickle", "add.apply_async((2, 3), serializer='pickle', task_id=ID)  # poison sample")
    def _():
        add.apply_async((2, 3), serializer="pickle", task_id=fixed_id(41))

    @case("send_task_unregistered", "app.send_task('go.only', (1,), {'k': 'v'}, task_id=ID)")
    def _():
        capapp.app.send_task("go.only", (1,), {"k": "v"}, task_id=fixed_id(42))

    return cases


def forget_declarations(app):
    """Makes the producer declare its queues again (kombu caches declarations per connection), so
    that each case's flushed DB shows the _kombu.binding.* sets a first publish writes. Only real
    Connection objects are touched: pools also hold lazy factories, which must not be called."""
    from kombu import Connection, pools

    conn_pools = [app.pool] + list(pools.connections.values())
    for pool in conn_pools:
        items = list(getattr(pool, "_dirty", ()))
        items += list(getattr(getattr(pool, "_resource", None), "queue", ()))
        for conn in items:
            if not isinstance(conn, Connection):
                continue
            if conn.declared_entities is not None:
                conn.declared_entities.clear()
            transport = conn.__dict__.get("_transport")  # never create one here
            state = getattr(transport, "state", None)
            if state is not None:
                state.clear()  # the virtual transport's own record of bindings


def capture_messages(r, writer, capapp, app1, only):
    summary = []
    for name, call, fn in message_cases(capapp, app1):
        if only and name not in only:
            continue
        r.flushdb()
        forget_declarations(capapp.app)
        forget_declarations(app1)
        sent_at = time.time()
        try:
            fn()
        except Exception as exc:
            writer.write(name + ".error.json", writer.with_meta({
                "case": name, "call": call, "error_type": type(exc).__name__,
                "error_module": type(exc).__module__, "error": str(exc),
                "note": "the real producer refused this case; nothing was published"}))
            summary.append((name, "error: %s" % type(exc).__name__))
            continue
        keys, bindings, lists = broker_snapshot(r)
        msgs = []  # (list key, raw element), oldest first (LPUSH puts the newest at the head)
        for key, elems in lists.items():
            for raw in reversed(elems):
                msgs.append((key, raw))
        for i, (key, raw) in enumerate(msgs):
            stem = name if len(msgs) == 1 else "%s-%d" % (name, i)
            env = json.loads(raw)
            body, info = decode_body(env)
            writer.write(stem + ".msg.json", raw)
            doc = {"case": name, "call": call, "list": key, "index": i, "of": len(msgs),
                   "sent_at": sent_at,
                   "sent_at_iso": dt.datetime.fromtimestamp(sent_at, UTC).isoformat(),
                   "envelope": env, "body": body, "body_info": info,
                   "keys_after": keys, "bindings": bindings}
            writer.write(stem + ".expect.json", writer.with_meta(doc))
        summary.append((name, "%d message(s)" % len(msgs)))
    return summary


# --------------------------------------------------------------------------------------------
# result cases (a real worker)

class Worker:
    def __init__(self, env, logdir, name):
        self.log_path = os.path.join(logdir, name + ".log")
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--pool", "solo",
               "--hostname", "cap-%s@capture" % name, "--loglevel", "INFO", "--",
               "--without-mingle", "--without-gossip", "--without-heartbeat"]
        full_env = dict(os.environ, PYTHONPATH=HERE, PYTHONUNBUFFERED="1", **env)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=full_env,
                                     cwd=HERE, text=True)
        deadline = time.time() + 60
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("worker exited before ready; log: " + open(self.log_path).read())
            if json.loads(line).get("event") == "ready":
                break
            if time.time() > deadline:
                raise RuntimeError("worker not ready in 60 s")
        self.hostname = "cap-%s@capture" % name

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_for(fn, timeout, interval=0.002):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            return None
        time.sleep(interval)


def python_view(app, task_id):
    from celery.result import AsyncResult

    res = AsyncResult(task_id, app=app)
    view = {"state": res.state}
    try:
        value = res.result
        if isinstance(value, BaseException):
            view["exc"] = {"type": type(value).__name__, "module": type(value).__module__,
                           "args": jsonable(list(value.args))}
        else:
            view["result"] = jsonable(value)
    except Exception as exc:
        view["decode_error"] = repr(exc)
    return view


def expect_from(meta):
    exp = {"status": meta.get("status"), "task_id": meta.get("task_id"),
           "result": meta.get("result"), "children": meta.get("children"),
           "has_traceback": bool(meta.get("traceback")),
           "date_done": meta.get("date_done"), "keys": list(meta.keys())}
    tb = meta.get("traceback")
    if tb:
        exp["traceback_last_line"] = tb.rstrip("\n").splitlines()[-1]
    for k in ("parent_id", "group_id", "name", "args", "kwargs", "worker", "retries", "queue"):
        if k in meta:
            exp[k] = meta[k]
    return exp


def capture_results(rb, rr, writer, capapp, only, url_base, logdir):
    """rb: broker DB client, rr: backend DB client."""
    from celery import group

    app = capapp.app
    add, fail, fail_value, retry_me = capapp.add, capapp.fail, capapp.fail_value, capapp.retry_me
    summary = []

    def key_of(task_id):
        return "celery-task-meta-" + task_id

    def grab(task_id, statuses, timeout=20):
        def probe():
            raw = rr.get(key_of(task_id))
            if raw is None:
                return None
            meta = json.loads(raw)
            return (raw, meta) if meta.get("status") in statuses else None
        return wait_for(probe, timeout)

    def save(name, call, task_id, got, key=None):
        if got is None:
            summary.append((name, "MISSING (timed out)"))
            writer.write(name + ".error.json", writer.with_meta({
                "case": name, "call": call, "error": "the expected state was not seen in time"}))
            return
        raw, meta = got
        log("%s: %s" % (name, meta.get("status")))
        key = key or key_of(task_id)
        writer.write(name + ".result.json", writer.with_meta({
            "case": name, "call": call, "key": key, "raw": redis_text(raw),
            "ttl": rr.ttl(key), "expect": expect_from(meta),
            "python_view": python_view(app, task_id) if key == key_of(task_id) else None}))
        summary.append((name, meta.get("status")))

    phase_names = set()

    def want(name):
        return name in phase_names and (not only or name in only)

    phases = [
        ("default", {}, [
            "result_success", "result_failure_myerror", "result_failure_valueerror",
            "result_retry", "result_retry_then_success", "result_revoked_expired",
            "result_revoked_control", "result_notregistered", "result_success_children",
            "result_chord", "result_group_saved"]),
        ("track_started", {"CAP_TRACK_STARTED": "1"}, ["result_started"]),
        ("extended", {"CAP_RESULT_EXTENDED": "1"}, ["result_extended_success",
                                                    "result_extended_failure"]),
    ]
    for phase, env, names in phases:
        phase_names = set(names)
        if not any(want(n) for n in names):
            continue
        rb.flushdb()
        rr.flushdb()
        env = dict(env, BROKER_URL=url_base + "/0", BACKEND_URL=url_base + "/1")
        log("starting worker (%s)" % phase)
        worker = Worker(env, logdir, phase)
        log("worker ready")
        try:
            if want("result_success"):
                tid = fixed_id(101)
                add.apply_async((2, 3), task_id=tid)
                save("result_success", "add.apply_async((2, 3))", tid, grab(tid, {"SUCCESS"}))
            if want("result_failure_myerror"):
                tid = fixed_id(102)
                fail.apply_async(task_id=tid)
                save("result_failure_myerror", "fail.apply_async()  # raises capapp.MyError('boom')",
                     tid, grab(tid, {"FAILURE"}))
            if want("result_failure_valueerror"):
                tid = fixed_id(103)
                fail_value.apply_async(task_id=tid)
                save("result_failure_valueerror", "fail_value.apply_async()  # ValueError('bad', 42)",
                     tid, grab(tid, {"FAILURE"}))
            if want("result_retry") or want("result_retry_then_success"):
                tid = fixed_id(104)
                retry_me.apply_async((7,), task_id=tid)
                got = grab(tid, {"RETRY"})
                unacked = wait_for(lambda: find_unacked(rb, tid), 3)
                save("result_retry", "retry_me.apply_async((7,))  # caught while RETRY", tid, got)
                if unacked:
                    field, raw, score = unacked
                    entry = json.loads(raw)
                    body, info = decode_body(entry[0])
                    writer.write("retry_message.unacked.json", writer.with_meta({
                        "case": "retry_message",
                        "call": "the message the worker re-published for retry_me (retries=1), "
                                "read from kombu's unacked hash while the worker held it (ETA)",
                        "key": "unacked", "field": field, "raw": raw, "score": score,
                        "index_key": "unacked_index",
                        "expect": {"envelope": entry[0], "exchange": entry[1],
                                   "routing_key": entry[2], "body": body, "body_info": info}}))
                    summary.append(("retry_message", "unacked entry"))
                save("result_retry_then_success", "retry_me.apply_async((7,))  # after 2 retries",
                     tid, grab(tid, {"SUCCESS"}))
            if want("result_revoked_expired"):
                tid = fixed_id(105)
                add.apply_async((2, 3), expires=dt.datetime.now(UTC) - dt.timedelta(seconds=10),
                                task_id=tid)
                save("result_revoked_expired", "add.apply_async((2, 3), expires=now - 10 s)",
                     tid, grab(tid, {"REVOKED"}))
            if want("result_revoked_control"):
                tid = fixed_id(106)
                add.apply_async((2, 3), countdown=2, task_id=tid)
                time.sleep(0.5)  # let the worker receive and hold it
                app.control.revoke(tid)
                save("result_revoked_control",
                     "add.apply_async((2, 3), countdown=2); app.control.revoke(id)",
                     tid, grab(tid, {"REVOKED"}))
            if want("result_notregistered"):
                tid = fixed_id(107)
                app.send_task("cap.unknown", (1,), task_id=tid)
                save("result_notregistered", "app.send_task('cap.unknown', (1,))", tid,
                     grab(tid, {"FAILURE"}))
            if want("result_success_children"):
                tid = fixed_id(108)
                add.apply_async((1, 2), link=add.s(5).set(task_id=fixed_id(109)), task_id=tid)
                save("result_success_children", "add.apply_async((1, 2), link=add.s(5))", tid,
                     grab(tid, {"SUCCESS"}))
            if want("result_chord"):
                from celery import chord
                tid = fixed_id(118)
                chord([add.s(1, 1).set(task_id=fixed_id(116)), add.s(2, 2).set(task_id=fixed_id(117))],
                      capapp.tsum.s(1000).set(task_id=tid)).apply_async()
                got = grab(tid, {"SUCCESS"})
                time.sleep(0.2)
                save("result_chord", "chord([add.s(1, 1), add.s(2, 2)], tsum.s(1000))  # body result",
                     tid, got)
                # what the chord bookkeeping leaves in the backend DB once the body has run
                left = {redis_text(k): [redis_text(rr.type(k)), rr.ttl(k)]
                        for k in rr.keys("celery-taskset-meta-*")}
                path = os.path.join(writer.out_dir, "result_chord.result.json")
                if os.path.exists(path):
                    doc = json.load(open(path))
                    doc["backend_group_keys_after"] = {
                        k: {"type": t, "ttl": ttl,
                            "value": redis_text(rr.get(k)) if t == "string" else None}
                        for k, (t, ttl) in sorted(left.items())}
                    writer.write("result_chord.result.json", doc)
            if want("result_group_saved"):
                gid = fixed_id(110)
                res = group(add.s(1, 1).set(task_id=fixed_id(111)),
                            add.s(2, 2).set(task_id=fixed_id(112))).apply_async(task_id=gid)
                res.save()
                key = "celery-taskset-meta-" + gid
                raw = rr.get(key)
                got = (raw, json.loads(raw)) if raw else None
                if got:
                    writer.write("result_group_saved.result.json", writer.with_meta({
                        "case": "result_group_saved",
                        "call": "group(add.s(1, 1), add.s(2, 2)).apply_async().save()",
                        "key": key, "raw": redis_text(raw), "ttl": rr.ttl(key),
                        "expect": got[1], "python_view": None}))
                    summary.append(("result_group_saved", "saved"))
            if want("result_started"):
                tid = fixed_id(113)
                capapp.sleep.apply_async((2,), task_id=tid)
                save("result_started", "sleep.apply_async((2,))  # task_track_started; caught while running",
                     tid, grab(tid, {"STARTED"}))
                grab(tid, {"SUCCESS"})
            if want("result_extended_success"):
                tid = fixed_id(114)
                add.apply_async((2, 5), task_id=tid)
                save("result_extended_success", "add.apply_async((2, 5))  # result_extended=True",
                     tid, grab(tid, {"SUCCESS"}))
            if want("result_extended_failure"):
                tid = fixed_id(115)
                fail_value.apply_async(task_id=tid)
                save("result_extended_failure", "fail_value.apply_async()  # result_extended=True",
                     tid, grab(tid, {"FAILURE"}))
        finally:
            log("stopping worker")
            worker.stop()
            log("worker stopped")
    return summary


def find_unacked(rb, task_id):
    for field, raw in rb.hgetall("unacked").items():
        text = redis_text(raw)
        entry = json.loads(text)
        headers = entry[0].get("headers") or {}
        if headers.get("id") == task_id and headers.get("retries") == 1:
            score = rb.zscore("unacked_index", field)
            return redis_text(field), text, score
    return None


# --------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", default="redis://127.0.0.1:6399",
                   help="redis-server to use (its databases 0 and 1 are flushed)")
    p.add_argument("--out", default=DEFAULT_OUT, help="parent directory (default testdata/wire)")
    p.add_argument("--only", action="append", default=[], help="case name (repeatable)")
    p.add_argument("--skip-results", action="store_true", help="no worker cases")
    p.add_argument("--list", action="store_true", help="list the case names and exit")
    a = p.parse_args(argv)

    u = urlparse(a.url)
    url_base = "%s://%s" % (u.scheme or "redis", u.netloc)
    os.environ["BROKER_URL"] = url_base + "/0"
    os.environ["BACKEND_URL"] = url_base + "/1"
    for k in list(os.environ):
        if k.startswith("CAP_"):
            del os.environ[k]
    sys.path.insert(0, HERE)

    import celery
    import kombu
    import redis

    import capapp

    app1 = capapp.create_app(set_as_current=False, task_protocol=1)
    if a.list:
        for name, call, _ in message_cases(capapp, app1):
            print(name)
        return 0

    meta = {"celery_version": celery.__version__, "kombu_version": kombu.__version__,
            "redis_py_version": redis.__version__, "python_version": platform.python_version(),
            "python": os.path.relpath(sys.executable, os.path.join(HERE, "..", ".."))
            if sys.executable.startswith(os.path.normpath(os.path.join(HERE, "..", "..")) + os.sep)
            else sys.executable}
    out_dir = os.path.join(a.out, celery.__version__)
    os.makedirs(out_dir, exist_ok=True)
    if not a.only:
        for pat in PATTERNS:
            for path in glob.glob(os.path.join(out_dir, pat)):
                os.remove(path)
    writer = Writer(out_dir, meta)

    def one_conn(url):  # one fixed connection, so MONITOR can tell the harness's commands apart
        return redis.Redis(connection_pool=redis.ConnectionPool.from_url(url),
                           single_connection_client=True)

    rb, rr = one_conn(url_base + "/0"), one_conn(url_base + "/1")
    commands = CommandLog(url_base + "/0")
    commands.ignore_client(rb)
    commands.ignore_client(rr)
    info = rb.info("server")
    meta["redis_server_version"] = info.get("redis_version")

    start = time.time()
    log("capturing messages")
    summary = capture_messages(rb, writer, capapp, app1, set(a.only))
    t_msgs = time.time() - start
    log("messages done")
    if not a.skip_results:
        with tempfile.TemporaryDirectory(prefix="capture-") as logdir:
            summary += capture_results(rb, rr, writer, capapp, set(a.only), url_base, logdir)
    rb.flushdb()
    rr.flushdb()
    capapp.quiet_exit(app1)
    capapp.quiet_exit(capapp.app)
    if not a.only:
        writer.write("redis_commands.json", writer.with_meta({
            "note": "distinct shapes of the Redis commands the Celery producer, worker and result "
                    "client sent during this capture (MONITOR; ids, numbers and payloads replaced "
                    "by placeholders), with how often each was seen",
            "commands": commands.stop()}))
    elapsed = time.time() - start
    json.dump({"celery_version": celery.__version__, "kombu_version": kombu.__version__,
               "out": out_dir, "files": len(writer.written), "seconds_messages": round(t_msgs, 2),
               "seconds_total": round(elapsed, 2),
               "cases": [{"case": n, "outcome": o} for n, o in summary]}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    missing = [n for n, o in summary if o.startswith("MISSING")]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
