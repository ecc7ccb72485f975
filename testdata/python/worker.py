"""Runs a Celery worker of capapp in this process: the same as `celery -A capapp worker ...`.

stdout carries only JSON lines, one per lifecycle event, so a test can wait for readiness:
  {"event": "ready", "hostname": "w1@host", "pid": 123, "celery_version": "5.7.0", ...}
  {"event": "shutting_down", "sig": "SIGTERM", "how": "Warm", ...}   (a stop signal arrived)
  {"event": "shutdown", "hostname": "w1@host", "pid": 123}          (worker_shutdown; 5.7 only
                                                                    sends it for the solo pool)
  {"event": "exit", "code": 0, "pid": 123}                          (worker_main returned)
Everything Celery prints (banner, logs) goes to stderr.

Arguments after `--` are passed to the worker unchanged (e.g. -- --without-mingle --without-gossip).
Stop it with SIGTERM (warm shutdown: in-flight and prefetched messages are restored) or SIGKILL
(a crash: they stay in the unacked hash until a visibility-timeout sweep).
"""

import argparse
import json
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument("--pool", "-P", default="solo", choices=["solo", "prefork", "threads"])
    parser.add_argument("--queues", "-Q", default="", help="comma-separated queues (default: celery)")
    parser.add_argument("--hostname", "-n", default="", help="node name, e.g. w1@%%h")
    parser.add_argument("-E", "--events", action="store_true", help="send task events")
    parser.add_argument("--loglevel", "-l", default="INFO")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="worker_prefetch_multiplier (same as CAP_PREFETCH)")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after --: more `celery worker` arguments")
    args = parser.parse_args(argv)

    if args.prefetch is not None:
        os.environ["CAP_PREFETCH"] = str(args.prefetch)

    # fd 1 becomes stderr for everything Celery writes (it prints its banner to sys.__stdout__);
    # our events go to a private duplicate of the original stdout.
    events_fd = os.dup(1)
    os.dup2(2, 1)
    events = os.fdopen(events_fd, "w", buffering=1)

    import celery
    import kombu
    from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

    import capapp

    seen = set()

    def emit(event, **fields):
        fields = dict(event=event, pid=os.getpid(), **fields)
        events.write(json.dumps(fields) + "\n")
        events.flush()

    @worker_ready.connect(weak=False)
    def on_ready(sender=None, **_):
        emit("ready", hostname=getattr(sender, "hostname", None),
             celery_version=celery.__version__, kombu_version=kombu.__version__,
             broker=capapp.BROKER_URL, backend=capapp.BACKEND_URL)

    @worker_shutting_down.connect(weak=False)
    def on_shutting_down(sender=None, sig=None, how=None, exitcode=None, **_):
        if how in seen:  # 5.2.6 sends the signal twice for one SIGTERM
            return
        seen.add(how)
        emit("shutting_down", hostname=sender, sig=sig, how=how, exitcode=exitcode)

    @worker_shutdown.connect(weak=False)
    def on_shutdown(sender=None, **_):
        emit("shutdown", hostname=getattr(sender, "hostname", None))

    wargs = ["worker", "--loglevel=" + args.loglevel, "--concurrency=%d" % args.concurrency,
             "--pool=" + args.pool]
    if args.queues:
        wargs.append("--queues=" + args.queues)
    if args.hostname:
        wargs.append("--hostname=" + args.hostname)
    if args.events:
        wargs.append("-E")
    extra = args.extra
    if extra and extra[0] == "--":
        extra = extra[1:]
    wargs.extend(extra)
    if args.prefetch is not None:
        capapp.app.conf.worker_prefetch_multiplier = args.prefetch
    code = 1
    try:
        code = capapp.app.worker_main(wargs) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        emit("exit", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
