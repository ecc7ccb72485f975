"""Sends tasks on an rpc:// app and reads their results in the same process (on rpc:// only the
sender's reply queue receives them): Celery's `send_task(...).get()`.

  rpc_call.py --spec JSON [--timeout T]

BROKER_URL names the broker; the result backend is rpc:// whatever BACKEND_URL says. The spec is
a list of {"name", "args", "kwargs", "wait_state"}: with wait_state the task's state is polled
(AsyncResult.state) until it is that state or the timeout passes, before the get(). Put such a
task first: once a get() has started the rpc result consumer, AsyncResult.state does not see new
messages until the next get() drains them (Celery's behaviour, not this script's).

Output: {"results": [{"id", "seen_state", "state", "result", "traceback", "exc", "raised"}, ...],
         "celery_version"}: result is get(propagate=False)'s value (an exception's repr), exc and
raised describe the exception it returned and the one get(propagate=True) raised ({"type",
"module", "args"}), null when none.
"""

import argparse
import json
import os
import sys
import time

os.environ["BACKEND_URL"] = "rpc://"

import celery  # noqa: E402

import capapp  # noqa: E402


def describe(exc):
    if exc is None:
        return None
    return {"type": type(exc).__name__, "module": type(exc).__module__,
            "args": [a if isinstance(a, (str, int, float, bool, type(None))) else repr(a) for a in exc.args]}


def call(app, spec, timeout):
    res = app.send_task(spec["name"], tuple(spec.get("args") or ()), spec.get("kwargs") or {})
    out = {"id": res.id, "seen_state": None}
    want = spec.get("wait_state")
    if want:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out["seen_state"] = res.state
            if out["seen_state"] == want:
                break
            time.sleep(0.05)
    value = res.get(timeout=timeout, propagate=False)
    out["state"] = res.state
    out["traceback"] = res.traceback
    if isinstance(value, BaseException):
        out["exc"], out["result"] = describe(value), repr(value)
    else:
        out["exc"], out["result"] = None, value
    out["raised"] = None
    try:
        res.get(timeout=timeout)
    except Exception as exc:  # what a caller's get() raises
        out["raised"] = describe(exc)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args(argv)
    app = capapp.create_app(result_backend="rpc://")
    results = [call(app, s, a.timeout) for s in json.loads(a.spec)]
    json.dump({"results": results, "celery_version": celery.__version__}, sys.stdout)
    app.close()


if __name__ == "__main__":
    main()
