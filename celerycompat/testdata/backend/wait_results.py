"""Wait for Go-stored results with the real Celery API (AsyncResult.get).

usage: wait_results.py <result_backend_url> <task_id>...

For each id in order: create AsyncResult(id) and call .get(timeout=10). Prints JSON lines:
  {"event": "got", "id": ...}       once the first GET of the key returned (so get() has
                                    subscribed and read the key: any later wake-up is a PUBLISH)
  {"event": "result", "id": ..., "woke": <time.time()>, ...}   after get() returned or raised
Values are described with Python types kept (datetime, Decimal, UUID, bytes become tagged objects).
"""
import datetime
import decimal
import json
import sys
import time
import uuid

from celery import Celery
from celery.exceptions import TaskRevokedError


def describe(v):
    if isinstance(v, dict):
        return {str(k): describe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [describe(x) for x in v]
    if isinstance(v, datetime.datetime):
        return {"py": "datetime", "iso": v.isoformat()}
    if isinstance(v, datetime.date):
        return {"py": "date", "iso": v.isoformat()}
    if isinstance(v, decimal.Decimal):
        return {"py": "Decimal", "str": str(v)}
    if isinstance(v, uuid.UUID):
        return {"py": "UUID", "str": str(v)}
    if isinstance(v, bytes):
        return {"py": "bytes", "hex": v.hex()}
    return v


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    url, ids = sys.argv[1], sys.argv[2:]
    app = Celery("waiter", broker=url, backend=url)
    backend = app.backend
    seen = set()
    orig_get = backend.get

    def get(key):
        value = orig_get(key)
        k = key.decode() if isinstance(key, bytes) else key
        if k not in seen:
            seen.add(k)
            emit({"event": "got", "id": k.rsplit("celery-task-meta-", 1)[-1]})
        return value

    backend.get = get
    for task_id in ids:
        r = app.AsyncResult(task_id)
        out = {"event": "result", "id": task_id}
        try:
            v = r.get(timeout=10)
            out["woke"] = time.time()
            out["ok"] = True
            out["value"] = describe(v)
        except Exception as e:  # noqa: BLE001 - we report whatever get() raised
            out["woke"] = time.time()
            out["ok"] = False
            out["exc_class"] = type(e).__name__
            out["exc_module"] = type(e).__module__
            out["exc_args"] = describe(list(e.args))
            out["revoked"] = isinstance(e, TaskRevokedError)
        out["state"] = r.state
        out["traceback"] = r.traceback
        dd = r.date_done
        out["date_done"] = dd.isoformat() if dd is not None else None
        out["date_done_aware"] = dd is not None and dd.tzinfo is not None
        emit(out)


if __name__ == "__main__":
    main()
