"""Reads task results the way a Python client does: AsyncResult(id).get(timeout=T, propagate=False).

  get_result.py [--timeout T] [--no-wait] ID [ID ...]

Prints one JSON object: {"results": [ {...}, ... ], "celery_version": ...}, one entry per id:
  id, state, ready, result (JSON-safe: exceptions become their repr), traceback, seconds (how long
  the get() took), timed_out (true if get() hit the timeout), and for exception states (FAILURE,
  RETRY, REVOKED) exc = {"type": class name, "module": class module, "args": exception args,
  "repr": repr(exc)}. decode_error is set when Celery itself could not decode the stored value
  (e.g. a SecurityError for a bad exc_module); children lists child task ids when stored.
With --no-wait the state is read once (no get()).
"""

import argparse
import json
import sys
import time


def jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def describe_exc(exc):
    return {"type": type(exc).__name__, "module": type(exc).__module__,
            "args": jsonable(list(getattr(exc, "args", ()))), "repr": repr(exc)}


def read_one(app, task_id, timeout, wait):
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import AsyncResult

    res = AsyncResult(task_id, app=app)
    out = {"id": task_id, "timed_out": False}
    start = time.monotonic()
    value = None
    try:
        if wait:
            value = res.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    except CeleryTimeout:
        out["timed_out"] = True
    except Exception as exc:  # decoding failures, SecurityError, ...
        out["decode_error"] = describe_exc(exc)
    out["seconds"] = time.monotonic() - start
    try:
        state = res.state
        out["state"] = state
        out["ready"] = res.ready()
        value = res.result
        out["traceback"] = res.traceback
    except Exception as exc:
        out.setdefault("decode_error", describe_exc(exc))
        out.setdefault("state", None)
        return out
    if isinstance(value, BaseException):
        out["exc"] = describe_exc(value)
        out["result"] = repr(value)
    else:
        out["result"] = jsonable(value)
    try:
        children = res.children
        if children:
            out["children"] = [getattr(c, "id", None) for c in children]
    except Exception:
        pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("ids", nargs="+")
    a = p.parse_args(argv)

    import celery
    import capapp

    results = [read_one(capapp.app, i, a.timeout, not a.no_wait) for i in a.ids]
    json.dump({"results": results, "celery_version": celery.__version__}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    capapp.quiet_exit(capapp.app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
