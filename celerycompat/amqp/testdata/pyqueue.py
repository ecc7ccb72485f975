"""Sends one task with the real Celery producer to a queue Celery declares with settings the
default capapp does not use, and prints {"id": ...} as JSON.

  pyqueue.py --queue Q [--max-priority N] [--queue-type quorum] [--priority P] [--args JSON]

--max-priority sets task_queue_max_priority (Celery adds x-max-priority to the queue's
arguments); --queue-type declares Q through task_queues with queue_arguments x-queue-type.
"""

import argparse
import json

from kombu import Exchange, Queue

import capapp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", required=True)
    parser.add_argument("--max-priority", type=int, default=None)
    parser.add_argument("--queue-type", default=None)
    parser.add_argument("--priority", type=int, default=None)
    parser.add_argument("--args", default="[1, 2]")
    a = parser.parse_args()
    app = capapp.app
    if a.max_priority is not None:
        app.conf.task_queue_max_priority = a.max_priority
    if a.queue_type:
        app.conf.task_queues = [Queue(a.queue, Exchange(a.queue), routing_key=a.queue,
                                      queue_arguments={"x-queue-type": a.queue_type})]
    opts = {"queue": a.queue}
    if a.priority is not None:
        opts["priority"] = a.priority
    res = app.send_task("cap.add", args=json.loads(a.args), **opts)
    print(json.dumps({"id": res.id}))


if __name__ == "__main__":
    main()
