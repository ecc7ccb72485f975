"""Store results with the real Celery backend API, for Go to read.

usage: store_results.py <result_backend_url> <ops-json>

ops-json is a list of operations:
  {"op": "done", "id": ..., "result": <json>}             app.backend.mark_as_done
  {"op": "done", "id": ..., "result_py": "<expr>"}        result built by eval (datetime, decimal,
                                                           uuid modules available)
  {"op": "failure", "id": ..., "exc": [module, type, args], "traceback": "..."}
  {"op": "retry", "id": ..., "exc": [module, type, args], "traceback": "..."}
  {"op": "revoked", "id": ..., "reason": "expired"}
  {"op": "started", "id": ..., "pid": 1, "hostname": "w1@vm"}   store_result(state=STARTED)
Any op may carry "request": {"task", "args", "kwargs", "hostname", "retries", "queue", "group",
"parent_id"}; with it the app runs with result_extended=True.
Prints {"celery": <version>} when done.
"""
import builtins
import datetime  # noqa: F401 - for result_py
import decimal  # noqa: F401
import json
import sys
import uuid  # noqa: F401

import celery
from celery import Celery, states
from celery.app.task import Context


def make_exc(spec):
    module, name, args = spec
    if module == "builtins":
        cls = getattr(builtins, name)
    else:
        cls = type(name, (Exception,), {"__module__": module})
    return cls(*args)


def main():
    url, ops = sys.argv[1], json.loads(sys.argv[2])
    app = Celery("storer", broker=url, backend=url)
    app.conf.result_extended = any("request" in op for op in ops)
    b = app.backend
    for op in ops:
        req = None
        if "request" in op:
            r = op["request"]
            req = Context(id=op["id"], task=r.get("task"), args=r.get("args"),
                          kwargs=r.get("kwargs"), hostname=r.get("hostname"),
                          retries=r.get("retries", 0),
                          delivery_info={"routing_key": r.get("queue")},
                          group=r.get("group"), parent_id=r.get("parent_id"))
        kind = op["op"]
        if kind == "done":
            value = eval(op["result_py"]) if "result_py" in op else op.get("result")  # noqa: S307
            b.mark_as_done(op["id"], value, request=req)
        elif kind == "failure":
            b.mark_as_failure(op["id"], make_exc(op["exc"]), traceback=op.get("traceback"), request=req)
        elif kind == "retry":
            b.mark_as_retry(op["id"], make_exc(op["exc"]), traceback=op.get("traceback"), request=req)
        elif kind == "revoked":
            b.mark_as_revoked(op["id"], op.get("reason", ""), request=req)
        elif kind == "started":
            b.store_result(op["id"], {"pid": op["pid"], "hostname": op["hostname"]},
                           states.STARTED, request=req)
        else:
            raise SystemExit("unknown op %r" % kind)
    print(json.dumps({"celery": celery.__version__}))


if __name__ == "__main__":
    main()
