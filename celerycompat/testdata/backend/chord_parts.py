"""Run chord header-part bookkeeping with the real Celery Redis backend.

usage: chord_parts.py <result_backend_url> <broker_url> <mode> <group_id> [<ops-json>]

mode "read": print the chord's stored parts as Python decodes them when the chord completes
  ({"results": [...]} or {"chord_error": "<message>", "cause": <exception class name>}).
mode "parts": for each {"id", "index", "result"} in ops-json call
  backend.on_chord_part_return(request, "SUCCESS", result) with a request whose chord is
  cap.tsum(1000); a completed chord publishes the body to the broker (queue "celery").
  Prints {"done": n}.
"""
import json
import sys

from celery import Celery
from celery.app.task import Context
from celery.exceptions import ChordError


def main():
    backend_url, broker_url, mode, gid = sys.argv[1:5]
    app = Celery("chords", broker=broker_url, backend=backend_url)
    b = app.backend
    if mode == "read":
        jkey = b.get_key_for_group(gid, ".j")
        try:
            res = [b._unpack_chord_result(tup, b.decode) for tup in b.client.zrange(jkey, 0, -1)]
            print(json.dumps({"results": res}))
        except ChordError as e:
            cause = e.__cause__ if e.__cause__ is not None else None
            print(json.dumps({"chord_error": str(e),
                              "cause": type(cause).__name__ if cause is not None else None}))
        return
    ops = json.loads(sys.argv[5])
    body = app.signature("cap.tsum", args=(1000,))
    for op in ops:
        req = Context(id=op["id"], group=gid, group_index=op["index"], chord=dict(body),
                      delivery_info={"routing_key": "celery"})
        b.on_chord_part_return(req, "SUCCESS", op["result"])
    print(json.dumps({"done": len(ops)}))


if __name__ == "__main__":
    main()
