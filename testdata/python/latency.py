"""Times tasks one at a time from the real Celery producer to whatever worker serves the queue.

  latency.py --count N [--pause-min 0.1] [--pause-max 0.4] [--chain K] [--warmup 3] [--floor]

Each round sends cap.echo(task_id=..., data={...}) with send_task (or, with --chain K, a chain
of K cap.echo steps, each immutable) and waits for AsyncResult.get() of the last task; it then
sleeps a random pause in [pause-min, pause-max] so that the worker is idle when the next task
arrives. Prints {"ms": [each round's latency in ms], "celery_version": ...} as JSON.

--floor measures the producer alone: the task goes to a queue no worker serves, the script stores
its result itself (untimed), and the time is send_task plus get(): what this producer costs
whatever worker answers.
"""

import argparse
import json
import random
import sys
import time
import uuid

import celery
from celery import chain

import capapp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--pause-min", type=float, default=0.1)
    p.add_argument("--pause-max", type=float, default=0.4)
    p.add_argument("--chain", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--floor", action="store_true")
    a = p.parse_args()
    app = capapp.app
    sig = app.signature("cap.echo")
    out = []
    for i in range(a.warmup + a.count):
        kwargs = {"task_id": str(uuid.uuid4()), "data": {"i": i}}
        start = time.perf_counter()
        if a.floor:
            res = app.send_task("cap.echo", kwargs=kwargs, queue="latency-floor")
            sent = time.perf_counter()
            app.backend.store_result(res.id, {"args": [], "kwargs": kwargs}, "SUCCESS")
            start += time.perf_counter() - sent
        elif a.chain:
            res = chain(*[sig.clone(kwargs=kwargs).set(immutable=True) for _ in range(a.chain)]).apply_async()
        else:
            res = app.send_task("cap.echo", kwargs=kwargs)
        res.get(timeout=30)
        ms = (time.perf_counter() - start) * 1000
        if i >= a.warmup:
            out.append(ms)
        time.sleep(random.uniform(a.pause_min, a.pause_max))
    json.dump({"ms": out, "celery_version": celery.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
