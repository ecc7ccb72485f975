#!/usr/bin/env bash
# Re-captures testdata/wire/amqp/<celery version>/ from both Python peers on RabbitMQ.
# The node is the Go test fixture's (internal/celerytest.SharedRabbitMQ: private ports, epmd,
# cookie and data, stopped afterwards), so this runs a Go test that runs capture_amqp.py with
# /usr/bin/python3 (Celery 5.2.6) and $CELERYBRIDGE_VENV/bin/python (5.7.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CELERYBRIDGE_VENV=${CELERYBRIDGE_VENV:-$(pwd)/.venv}
for v in 5.2.6 5.7.0; do rm -rf "testdata/wire/amqp/$v"; done
go test -tags capture -count=1 -timeout 15m -run '^TestCaptureAMQPWire$' -v ./internal/celerytest "$@"
