"""Dumps every key of one Redis database as JSON, for debugging and for tests that compare the
keys Python and Go leave behind.

  dump_keys.py [--url redis://127.0.0.1:6379/0] [--pattern '*'] [--no-values]

Output: {"keys": {name: {"type", "ttl", "value"}}} where value is a string (string), a list
(list, head first as LRANGE returns it), a sorted list (set), {field: value} (hash) or
[[member, score], ...] (zset, ascending). Byte strings that are not UTF-8 are written as
{"latin1": ...}. Key names keep kombu's \\x06\\x16 separator (JSON \\u0006\\u0016).
Needs only the redis client (no Celery): it runs on either peer.
"""

import argparse
import json
import sys


def text(b):
    if isinstance(b, bytes):
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return {"latin1": b.decode("latin-1")}
    return b


def dump(client, pattern="*", values=True):
    out = {}
    for key in sorted(client.scan_iter(match=pattern, count=1000)):
        kind = client.type(key).decode()
        entry = {"type": kind, "ttl": client.ttl(key)}
        if values:
            if kind == "string":
                entry["value"] = text(client.get(key))
            elif kind == "list":
                entry["value"] = [text(v) for v in client.lrange(key, 0, -1)]
            elif kind == "set":
                entry["value"] = sorted((text(v) for v in client.smembers(key)), key=str)
            elif kind == "hash":
                entry["value"] = {str(text(k)): text(v) for k, v in client.hgetall(key).items()}
            elif kind == "zset":
                entry["value"] = [[text(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
        out[str(text(key))] = entry
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pattern", default="*")
    p.add_argument("--no-values", action="store_true")
    a = p.parse_args(argv)

    import redis

    client = redis.Redis.from_url(a.url)
    json.dump({"keys": dump(client, a.pattern, not a.no_values)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
