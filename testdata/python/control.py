"""Remote control from Python, for celerybridge's control interop tests (capapp's app).

Prints one JSON document on stdout.

  control.py broadcast COMMAND [--args JSON] [--timeout S] [--destination a,b]
      app.control.broadcast(COMMAND, arguments=ARGS, reply=True): the replies as Celery returns
      them, a list of {node: reply}.
  control.py task-status BUSINESS_ID [--timeout S]
      The original rig's main_api.py GET /task-status lookup: inspect().active() then .reserved(),
      looking for the task whose kwargs "task_id" is BUSINESS_ID. Prints
      {"found": bool, "status": "active"|"reserved"|null, "node", "celery_task_id", "args", "kwargs"}.

Works with Celery 5.2.6 and 5.7.0. Configured by BROKER_URL / BACKEND_URL like capapp.
"""

import argparse
import json
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("broadcast")
    b.add_argument("command")
    b.add_argument("--args", default="{}")
    b.add_argument("--timeout", type=float, default=1.0)
    b.add_argument("--destination", default="")
    s = sub.add_parser("task-status")
    s.add_argument("business_id")
    s.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)

    import capapp

    app = capapp.app
    try:
        if args.cmd == "broadcast":
            dest = [d for d in args.destination.split(",") if d] or None
            out = app.control.broadcast(args.command, arguments=json.loads(args.args), reply=True,
                                        timeout=args.timeout, destination=dest)
        else:
            out = task_status(app, args.business_id, args.timeout)
        print(json.dumps(out))
    finally:
        capapp.quiet_exit(app)
    return 0


def task_status(app, business_id, timeout):
    """main_api.py's lookup, as the original service does it."""
    inspect = app.control.inspect(timeout=timeout)
    for status, method in (("active", inspect.active), ("reserved", inspect.reserved)):
        for node, tasks in (method() or {}).items():
            for task in tasks or []:
                kwargs = task.get("kwargs") or {}
                if isinstance(kwargs, dict) and kwargs.get("task_id") == business_id:
                    return {"found": True, "status": status, "node": node,
                            "celery_task_id": task.get("id"), "args": task.get("args"),
                            "kwargs": kwargs}
    return {"found": False, "status": None, "node": None, "celery_task_id": None,
            "args": None, "kwargs": None}


if __name__ == "__main__":
    sys.exit(main())
