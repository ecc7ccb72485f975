#!/usr/bin/env bash
# Re-captures testdata/wire/<version>/ from both Python peers (`make capture` runs this).
# Starts a private redis-server on a free loopback port (or CAPTURE_REDIS_PORT) and stops it after.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
VENV=${CELERYBRIDGE_VENV:-$ROOT/.venv}
OLD_PY=${CELERYBRIDGE_PYTHON_OLD:-/usr/bin/python3}
PORT=${CAPTURE_REDIS_PORT:-$("$OLD_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

dir=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
	--daemonize no --loglevel warning --logfile "$dir/redis.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 200); do
	"$OLD_PY" -c "import redis; redis.Redis(port=$PORT).ping()" 2>/dev/null && break
	sleep 0.05
done

for py in "$OLD_PY" "$VENV/bin/python"; do
	echo "capture: $py ($("$py" -c 'import celery; print(celery.__version__)'))" >&2
	start=$(date +%s.%N)
	"$py" capture.py "redis://127.0.0.1:$PORT" "$@" >"$dir/summary.json"
	"$OLD_PY" - "$dir/summary.json" "$start" <<'PY'
import json, sys, time
d = json.load(open(sys.argv[1]))
bad = [c for c in d["cases"] if not c["outcome"][0].isalnum() or c["outcome"].startswith(("MISSING", "error"))]
print("capture: celery %s / kombu %s: %d files in %s, %.1fs%s" % (
    d["celery_version"], d["kombu_version"], d["files"], d["out"], time.time() - float(sys.argv[2]),
    "".join("\n  %s: %s" % (c["case"], c["outcome"]) for c in bad)), file=sys.stderr)
PY
done
