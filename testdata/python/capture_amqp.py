"""Captures what real Celery/kombu (py-amqp transport) writes on RabbitMQ, as JSON golden files.

    capture_amqp.py --url amqp://guest:guest@127.0.0.1:PORT --ctl /path/to/rabbitmqctl-wrapper \
                    [--out DIR] [--only producer|worker]

--ctl is an executable that runs `rabbitmqctl -n <node> -q "$@"` against the node behind --url
(internal/celerytest writes one; see capture_amqp_all.sh). The script creates its own vhosts
(`cap-<celery version>-<phase>`, deleted first), so a node can be reused. Output goes to
testdata/wire/amqp/<celery version>/ unless --out says otherwise:

  producer/<case>.json     what the real producer (apply_async / group / chain / protocol 1)
                           published: each message as basic_get returned it (delivery_info,
                           properties incl. application_headers, body text and parsed body)
  producer_topology.json   exchanges, queues, bindings the producer declared (rabbitmqctl), in the
                           default setup and with task_queue_max_priority=10
  redelivered.json         one message fetched without ack, the channel closed, fetched again
  worker/*.json            a real `celery worker` (prefork, concurrency 2, prefetch multiplier 1,
                           acks_late, -E, rpc:// backend): its topology, consumers and channel
                           qos before/while it holds an ETA task, the pidbox broadcast and reply of
                           `inspect ping`, its events (spied through a queue bound to celeryev
                           with '#'), and the rpc:// result message and reply queue

Task ids are fixed (00000000-0000-4000-8000-0000000001NN). Everything printed on stdout is a JSON
summary; logs go to stderr.
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import amqp
import celery
import kombu

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER_HOST = "capw@cap"


def tid(n):
    return "00000000-0000-4000-8000-%012d" % (100 + n)


def log(*a):
    print("capture_amqp:", *a, file=sys.stderr, flush=True)


def jdefault(o):
    if isinstance(o, (bytes, bytearray)):
        return {"__bytes__": o.decode("utf-8", "replace")}
    if isinstance(o, (datetime.datetime, datetime.date)):
        return {"__datetime__": o.isoformat()}
    return repr(o)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = dict(data, celery_version=celery.__version__, kombu_version=kombu.__version__,
                amqp_version=amqp.__version__)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=jdefault, ensure_ascii=False)
        f.write("\n")


class Ctl:
    def __init__(self, ctl):
        self.ctl = ctl

    def run(self, *args):
        p = subprocess.run([self.ctl, *args], capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError("rabbitmqctl %s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def vhost(self, name):
        subprocess.run([self.ctl, "delete_vhost", name], capture_output=True)
        self.run("add_vhost", name)
        self.run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def list(self, vhost, cmd, *items):
        out = self.run(cmd, "-p", vhost, "--formatter", "json", *items)
        return json.loads(out or "[]")

    def topology(self, vhost):
        ex = self.list(vhost, "list_exchanges", "name", "type", "durable", "auto_delete", "internal", "arguments")
        qs = self.list(vhost, "list_queues", "name", "durable", "auto_delete", "exclusive", "arguments",
                       "messages_ready", "messages_unacknowledged", "consumers")
        bs = self.list(vhost, "list_bindings", "source_name", "source_kind", "destination_name",
                       "destination_kind", "routing_key", "arguments")
        return {
            # the amq.* exchanges exist in every vhost; keep only what Celery declared
            "exchanges": sorted([e for e in ex if not e["name"].startswith("amq.") and e["name"]],
                                key=lambda e: e["name"]),
            "queues": sorted(qs, key=lambda q: q["name"]),
            "bindings": sorted([b for b in bs if b["source_name"]],
                               key=lambda b: (b["source_name"], b["destination_name"], b["routing_key"])),
        }


def conn_for(url, vhost):
    rest = url.split("://", 1)[1]
    cred, host = rest.split("@", 1)
    user, pw = cred.split(":", 1)
    c = amqp.Connection(host=host.rstrip("/"), userid=user, password=pw, virtual_host=vhost)
    c.connect()
    return c


def raw(msg):
    body = msg.body
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    di = {k: v for k, v in msg.delivery_info.items() if k != "channel"}
    return {"delivery_info": di, "properties": dict(msg.properties), "body_text": text, "body": parsed}


def drain(ch, queue, no_ack=True, want=None, timeout=10.0):
    out, deadline = [], time.time() + timeout
    while True:
        m = ch.basic_get(queue, no_ack=no_ack)
        if m is not None:
            out.append(raw(m))
            if want is not None and len(out) >= want:
                return out
            continue
        if want is None or time.time() > deadline:
            return out
        time.sleep(0.05)


# --- producer ------------------------------------------------------------------------------------

def producer_cases(app):
    add, echo = app.tasks["cap.add"], app.tasks["cap.echo"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return [
        ("add", "celery", lambda: add.apply_async((2, 3), task_id=tid(1))),
        ("kwargs", "celery", lambda: echo.apply_async((1,), {"s": "héllo ✓", "n": [1, {"a": None}]}, task_id=tid(2))),
        ("countdown", "celery", lambda: add.apply_async((1, 1), countdown=30, task_id=tid(3))),
        ("eta_expires", "celery", lambda: add.apply_async((1, 2), eta=now + datetime.timedelta(hours=1),
                                                          expires=now + datetime.timedelta(hours=2), task_id=tid(4))),
        ("priority_default_queue", "celery", lambda: add.apply_async((1, 3), priority=7, task_id=tid(5))),
        ("link_link_error", "celery", lambda: add.apply_async(
            (2, 2), task_id=tid(6), link=echo.si("ok"), link_error=app.tasks["cap.on_err"].s())),
        ("headers_custom", "celery", lambda: add.apply_async((1, 4), headers={"x-trace": "abc"}, task_id=tid(7))),
        ("queue_other", "other", lambda: add.apply_async((1, 5), queue="other", task_id=tid(8))),
        ("group", "celery", lambda: celery.group(add.si(1, 1), add.si(2, 2)).apply_async(task_id=tid(9))),
        ("chain", "celery", lambda: celery.chain(add.s(1, 1), add.s(10)).apply_async(task_id=tid(10))),
    ]


def capture_producer(args, ctl, out):
    ver = celery.__version__
    results = []
    for phase, overrides in (("producer", {}), ("maxprio", {"task_queue_max_priority": 10,
                                                            "task_default_priority": 5})):
        vhost = "cap-%s-%s" % (ver, phase)
        ctl.vhost(vhost)
        import capapp
        app = capapp.create_app(set_as_current=False, broker_url="%s/%s" % (args.url, vhost),
                                result_backend="rpc://", **overrides)
        c = conn_for(args.url, vhost)
        ch = c.channel()
        cases = producer_cases(app) if phase == "producer" else [
            ("maxprio_priority_9", "celery", lambda: app.tasks["cap.add"].apply_async((9, 9), priority=9, task_id=tid(20))),
            ("maxprio_default_priority", "celery", lambda: app.tasks["cap.add"].apply_async((5, 5), task_id=tid(21))),
            ("maxprio_queue_other", "other", lambda: app.tasks["cap.add"].apply_async((1, 1), queue="other", priority=2, task_id=tid(22))),
        ]
        for name, queue, call in cases:
            sent_at = time.time()
            call()
            time.sleep(0.3)  # the publish is not confirmed; let the broker route it
            msgs = drain(ch, queue, want=None)
            write(os.path.join(out, "producer", name + ".json"),
                  {"case": name, "vhost_phase": phase, "queue": queue, "sent_at": sent_at,
                   "config": overrides, "messages": msgs})
            results.append((name, len(msgs)))
        write(os.path.join(out, "producer_topology_%s.json" % phase),
              {"phase": phase, "config": overrides, **ctl.topology(vhost)})
        if phase == "producer":
            # protocol 1, from an app configured for it
            app1 = capapp.create_app(set_as_current=False, broker_url="%s/%s" % (args.url, vhost),
                                     result_backend="rpc://", task_protocol=1)
            app1.tasks["cap.add"].apply_async((3, 4), task_id=tid(11))
            msgs = drain(ch, "celery", want=1, timeout=5)
            write(os.path.join(out, "producer", "protocol1_add.json"),
                  {"case": "protocol1_add", "queue": "celery", "config": {"task_protocol": 1}, "messages": msgs})
            results.append(("protocol1_add", len(msgs)))
            # redelivered flag: get without ack, close the channel, get again
            app.tasks["cap.add"].apply_async((8, 8), task_id=tid(12))
            ch2 = c.channel()
            first = drain(ch2, "celery", no_ack=False, want=1, timeout=5)
            ch2.close()
            again = drain(ch, "celery", want=1, timeout=5)
            write(os.path.join(out, "redelivered.json"),
                  {"case": "redelivered", "first": first, "after_channel_close": again})
        c.close()
    return results


# --- worker --------------------------------------------------------------------------------------

def start_worker(broker, env_extra):
    env = dict(os.environ, BROKER_URL=broker, BACKEND_URL="rpc://", CAP_ACKS_LATE="1", CAP_PREFETCH="1",
               PYTHONPATH=HERE, PYTHONUNBUFFERED="1", **env_extra)
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "worker.py"), "--pool", "prefork",
                          "--concurrency", "2", "-E", "--hostname", WORKER_HOST],
                         stdout=subprocess.PIPE, stderr=sys.stderr, env=env, cwd=HERE, text=True)
    for line in p.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "ready":
            return p
    raise RuntimeError("worker exited before ready")


def capture_worker(args, ctl, out):
    import capapp
    ver = celery.__version__
    vhost = "cap-%s-worker" % ver
    ctl.vhost(vhost)
    broker = "%s/%s" % (args.url, vhost)
    app = capapp.create_app(set_as_current=False, broker_url=broker, result_backend="rpc://")
    c = conn_for(args.url, vhost)
    ch = c.channel()
    # Spy queues, bound before the worker starts, to exchanges declared exactly as Celery does.
    with app.connection_for_write() as kc:
        kch = kc.channel()
        mailbox = app.control.mailbox
        mailbox.exchange(kch).declare()
        mailbox.reply_exchange(kch).declare()
        kombu.Exchange("celeryev", type="topic")(kch).declare()
        kch.close()
    oid = mailbox.oid
    for q, ex, rk in (("spy.pidbox", "celery.pidbox", ""), ("spy.reply", "reply.celery.pidbox", oid),
                      ("spy.events", "celeryev", "#")):  # spy.reply is bound again for ping below
        ch.queue_declare(q, durable=False, auto_delete=False)
        ch.queue_bind(q, ex, rk)

    w = start_worker(broker, {})
    try:
        time.sleep(2)  # mingle, gossip, first heartbeat
        write(os.path.join(out, "worker", "topology_ready.json"),
              {"worker": WORKER_HOST, "spies": ["spy.pidbox", "spy.reply", "spy.events"], **ctl.topology(vhost)})
        write(os.path.join(out, "worker", "consumers_ready.json"),
              {"consumers": ctl.list(vhost, "list_consumers", "queue_name", "ack_required", "prefetch_count",
                                     "arguments"),
               "channels": ctl.run("list_channels", "vhost", "prefetch_count", "global_prefetch_count",
                                   "messages_unacknowledged", "consumer_count", "--formatter", "json")})
        startup_pidbox = drain(ch, "spy.pidbox")
        startup_reply = drain(ch, "spy.reply")

        # inspect ping: the broadcast and the reply. inspect() broadcasts through a fresh clone of
        # the mailbox whose oid (the reply routing key) is new, so for the reply we hold the clone:
        # Control.broadcast does the same _broadcast call.
        replies = app.control.inspect(timeout=2).ping()
        inspect_request = drain(ch, "spy.pidbox", want=1)
        with app.connection_for_write() as kc:
            bound = app.control.mailbox(kc)
            ch.queue_bind("spy.reply", "reply.celery.pidbox", bound.oid)
            client_reply_queue = []

            def on_reply(_reply):  # the reply queue is auto-delete: list it while it is consumed
                client_reply_queue.extend(q for q in ctl.topology(vhost)["queues"]
                                          if q["name"] == "%s.reply.celery.pidbox" % bound.oid)
            bound_replies = bound._broadcast("ping", {}, reply=True, timeout=3, callback=on_reply)
        write(os.path.join(out, "worker", "pidbox_ping.json"),
              {"client_oid": bound.oid, "python_view": replies, "python_view_bound": bound_replies,
               "request": inspect_request, "request_bound": drain(ch, "spy.pidbox", want=1),
               "reply": drain(ch, "spy.reply", want=1), "client_reply_queue": client_reply_queue,
               "at_worker_startup": {"broadcasts": startup_pidbox, "replies_to_client_oid": startup_reply},
               "queues_after": ctl.topology(vhost)["queues"]})

        # rpc:// round trip with a real client, then the raw result through a reply queue of ours
        r = app.tasks["cap.add"].apply_async((20, 22), task_id=tid(30))
        value = r.get(timeout=20)
        reply_q = "capture.rpc.reply"
        ch.queue_declare(reply_q, durable=False, auto_delete=False)
        app.tasks["cap.add"].apply_async((1, 2), task_id=tid(31), reply_to=reply_q)
        fail = app.tasks["cap.fail"].apply_async(task_id=tid(32), reply_to=reply_q)
        raw_results = drain(ch, reply_q, want=3, timeout=20)  # STARTED is not tracked: SUCCESS + FAILURE
        write(os.path.join(out, "worker", "rpc_result.json"),
              {"client_thread_oid": app.thread_oid, "roundtrip": {"id": r.id, "get": value},
               "raw_reply_queue": reply_q, "raw": raw_results,
               "queues": ctl.topology(vhost)["queues"]})
        del fail

        # ETA: the worker holds the message unacked and raises its prefetch by one
        before = ctl.run("list_channels", "prefetch_count", "global_prefetch_count",
                         "messages_unacknowledged", "consumer_count", "--formatter", "json")
        app.tasks["cap.add"].apply_async((5, 5), countdown=60, task_id=tid(33))
        time.sleep(2)
        during = ctl.run("list_channels", "prefetch_count", "global_prefetch_count",
                         "messages_unacknowledged", "consumer_count", "--formatter", "json")
        queues_during = ctl.topology(vhost)["queues"]
        consumers_during = ctl.list(vhost, "list_consumers", "queue_name", "ack_required", "prefetch_count")
    finally:
        w.send_signal(signal.SIGTERM)
        try:
            w.wait(60)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
    time.sleep(1)
    returned = drain(ch, "celery", want=1, timeout=5)
    write(os.path.join(out, "worker", "eta_qos.json"),
          {"task_id": tid(33), "countdown": 60, "channels_before": json.loads(before),
           "channels_while_eta_held": json.loads(during), "queues_while_eta_held": queues_during,
           "consumers_while_eta_held": consumers_during,
           "after_warm_shutdown": returned})
    events = drain(ch, "spy.events")
    write(os.path.join(out, "worker", "events.json"),
          {"count": len(events), "routing_keys": sorted({e["delivery_info"]["routing_key"] for e in events}),
           "first_of_each": _first_of_each(events)})
    write(os.path.join(out, "worker", "topology_after_shutdown.json"), ctl.topology(vhost))
    c.close()
    return [("worker", len(events))]


def _first_of_each(events):
    seen = {}
    for e in events:
        seen.setdefault(e["delivery_info"]["routing_key"], e)
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="amqp://guest:guest@127.0.0.1:PORT (no vhost)")
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--out")
    ap.add_argument("--only", choices=["producer", "worker"])
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    out = args.out or os.path.join(HERE, "..", "wire", "amqp", celery.__version__)
    out = os.path.abspath(out)
    ctl = Ctl(args.ctl)
    start = time.time()
    summary = []
    if args.only in (None, "producer"):
        summary += capture_producer(args, ctl, out)
    if args.only in (None, "worker"):
        summary += capture_worker(args, ctl, out)
    print(json.dumps({"celery_version": celery.__version__, "kombu_version": kombu.__version__,
                      "out": out, "cases": summary, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
