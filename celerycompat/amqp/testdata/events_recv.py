"""events_recv: Celery's own event receiver (app.events.Receiver, what `celery events` and
Flower use) on the broker BROKER_URL names. Prints READY once it consumes, then every event
it receives as one JSON line, and exits after the worker-offline of the node named by argv[1]
(or after argv[2] seconds, default 60)."""

import json
import sys
import time

from capapp import app

node = sys.argv[1]
deadline = time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 60)


class Recv(app.events.Receiver):
    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        print("READY", flush=True)

    def on_iteration(self):
        if time.monotonic() > deadline:
            self.should_stop = True


def on_event(ev):
    print(json.dumps(ev), flush=True)
    if ev.get("type") == "worker-offline" and ev.get("hostname") == node:
        recv.should_stop = True


with app.connection_for_read() as conn:
    recv = Recv(conn, handlers={"*": on_event})
    recv.capture(limit=None, timeout=None, wakeup=False)
