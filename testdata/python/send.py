"""Sends tasks with the real Celery producer (apply_async) and prints their ids as JSON.

One task from flags:
  send.py --name cap.add --args '[2, 3]' [--kwargs '{}'] [--task-id ID] [--countdown S]
          [--eta ISO] [--expires S|ISO] [--priority P] [--queue Q] [--headers JSON]
          [--link SIG] [--link-error SIG] [--protocol 1] [--count N]
Or a JSON spec (an object or a list of them) with --spec JSON, or on stdin with --spec -.

Spec keys: name, args, kwargs, task_id, countdown, eta (ISO 8601), expires (seconds or ISO 8601),
priority, queue, headers, link, link_error (a signature or a list of them), shadow, time_limit,
soft_time_limit, ignore_result, serializer, compression, count (send N copies);
instead of name: chain: [SIG, ...] (args/kwargs go to the first step), group: [SIG, ...] (save: true stores the GroupResult) or
chord: {"header": [SIG, ...], "body": SIG}. A SIG is a task name or
{"name", "args", "kwargs", "options", "immutable"}.
protocol: 1 (or --protocol 1) sends every message of this run with task_protocol 1.

Output: {"sent": [{"id": ID, "ids": [every task id, in order], "group_id": ...}, ...],
         "ids": [ID, ...], "seconds": elapsed, "celery_version": ...}
For a chain "id" is the last task and "ids" runs first to last; for a chord "id" is the body.
"""

import argparse
import datetime as dt
import json
import sys
import time


def parse_time(value):
    """An ISO 8601 string (a trailing Z is allowed) -> datetime; numbers pass through."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        return dt.datetime.fromisoformat(s)
    raise ValueError("not a time: %r" % (value,))


def make_sig(app, spec):
    """A Celery signature from a SIG spec (name string or object)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    sig = app.signature(spec["name"], args=tuple(spec.get("args") or ()),
                        kwargs=spec.get("kwargs") or {}, **(spec.get("options") or {}))
    if spec.get("immutable"):
        sig = sig.set(immutable=True)
    return sig


def make_sigs(app, spec):
    if spec is None:
        return None
    if isinstance(spec, list):
        return [make_sig(app, s) for s in spec]
    return make_sig(app, spec)


OPTION_KEYS = ("task_id", "countdown", "priority", "queue", "headers", "shadow", "time_limit",
               "soft_time_limit", "ignore_result", "serializer", "compression", "retries",
               "parent_id", "root_id", "exchange", "routing_key")


def apply_options(app, spec):
    opts = {k: spec[k] for k in OPTION_KEYS if spec.get(k) is not None}
    if spec.get("eta") is not None:
        opts["eta"] = parse_time(spec["eta"])
    if spec.get("expires") is not None:
        opts["expires"] = parse_time(spec["expires"])
    if spec.get("link") is not None:
        opts["link"] = make_sigs(app, spec["link"])
    if spec.get("link_error") is not None:
        opts["link_error"] = make_sigs(app, spec["link_error"])
    return opts


def chain_ids(result):
    ids = []
    while result is not None:
        ids.append(result.id)
        result = result.parent
    return list(reversed(ids))


def send_one(app, spec):
    from celery import chain, chord, group

    opts = apply_options(app, spec)
    args = tuple(spec.get("args") or ())
    kwargs = spec.get("kwargs") or {}
    if "chain" in spec:
        res = chain(*[make_sig(app, s) for s in spec["chain"]]).apply_async(args, kwargs, **opts)
        return {"id": res.id, "ids": chain_ids(res)}
    if "group" in spec:
        res = group(*[make_sig(app, s) for s in spec["group"]]).apply_async(args, kwargs, **opts)
        if spec.get("save"):
            res.save()
        return {"id": res.id, "group_id": res.id, "ids": [r.id for r in res.results]}
    if "chord" in spec:
        c = spec["chord"]
        res = chord([make_sig(app, s) for s in c["header"]], make_sig(app, c["body"])).apply_async(
            args, kwargs, **opts)
        parent = res.parent
        header = [r.id for r in getattr(parent, "results", None) or []]
        return {"id": res.id, "group_id": getattr(parent, "id", None), "ids": header + [res.id]}
    name = spec["name"]
    task = app.tasks.get(name)
    if task is not None:
        res = task.apply_async(args, kwargs, **opts)
    else:  # not registered here (e.g. a Go-only task): same message, via send_task
        res = app.send_task(name, args, kwargs, **opts)
    return {"id": res.id, "ids": [res.id]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", help="JSON spec (object or list), or - for stdin")
    p.add_argument("--name")
    p.add_argument("--args", type=json.loads)
    p.add_argument("--kwargs", type=json.loads)
    p.add_argument("--task-id")
    p.add_argument("--countdown", type=float)
    p.add_argument("--eta")
    p.add_argument("--expires")
    p.add_argument("--priority", type=int)
    p.add_argument("--queue")
    p.add_argument("--headers", type=json.loads)
    p.add_argument("--link", type=json.loads)
    p.add_argument("--link-error", type=json.loads)
    p.add_argument("--serializer")
    p.add_argument("--compression")
    p.add_argument("--count", type=int)
    p.add_argument("--protocol", type=int, choices=[1, 2])
    a = p.parse_args(argv)

    if a.spec is not None:
        raw = sys.stdin.read() if a.spec == "-" else a.spec
        specs = json.loads(raw)
    else:
        if not a.name:
            p.error("--name or --spec is required")
        specs = {"name": a.name, "args": a.args, "kwargs": a.kwargs, "task_id": a.task_id,
                 "countdown": a.countdown, "eta": a.eta, "priority": a.priority, "queue": a.queue,
                 "headers": a.headers, "link": a.link, "link_error": a.link_error,
                 "serializer": a.serializer, "compression": a.compression, "count": a.count}
        if a.expires is not None:
            try:
                specs["expires"] = float(a.expires)
            except ValueError:
                specs["expires"] = a.expires
    if isinstance(specs, dict):
        specs = [specs]

    protocols = {s.get("protocol") for s in specs if s.get("protocol")}
    if a.protocol:
        protocols.add(a.protocol)
    if len(protocols) > 1:
        p.error("one protocol per run")

    import os
    if protocols:
        os.environ["CAP_TASK_PROTOCOL"] = str(protocols.pop())
    import celery
    import capapp

    app = capapp.app
    start = time.monotonic()
    sent = []
    for spec in specs:
        for _ in range(int(spec.get("count") or 1)):
            sent.append(send_one(app, spec))
    out = {"sent": sent, "ids": [s["id"] for s in sent], "seconds": time.monotonic() - start,
           "celery_version": celery.__version__}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    capapp.quiet_exit(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
