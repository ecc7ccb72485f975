#!/usr/bin/env bash
# Installs the peers that celerybridge's tests drive, and nothing else. Idempotent: a second run
# that finds everything in place only checks and exits (well under a second).
#
#   Debian (apt-get): redis-server, python3-celery (5.2.6, the old peer under /usr/bin/python3),
#                     python3-redis, python3-msgpack (for the msgpack wire capture), python3-venv,
#                     postgresql (for callback/pgstore's tests, which start their own server from
#                     /usr/lib/postgresql/<version>/bin as the postgres user the package creates),
#                     rabbitmq-server (3.10.x, for the AMQP transport's tests, which start a private
#                     node on loopback ports via internal/celerytest; the package's own system
#                     service is kept from starting, so nothing holds 5672/4369/25672).
#   Go (proxy):       staticcheck $STATICCHECK (honnef.co/go/tools) into $TOOLS (default: <repo>/.tools/bin),
#                     run by `make vet` beside go vet.
#   PyPI (pip):       a venv at $VENV (default: <repo>/.venv) with examples/python/requirements.txt
#                     (celery 5.7.0, the new peer). It is rebuilt only when the requirements change
#                     (their sha256 is stored in $VENV/.requirements.sha256) or celery is not 5.7.0.
#
# Environment: VENV (venv directory), PYTHON (interpreter that creates the venv; default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
REQ=$ROOT/examples/python/requirements.txt
WANT_CELERY=5.7.0
TOOLS=${TOOLS:-$ROOT/.tools/bin}
STATICCHECK=v0.8.2 # staticcheck 2026.2.2

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		log "need root for: $*"; return 1
	fi
}

# --- Debian packages -------------------------------------------------------------------------
apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
/usr/bin/python3 -c 'import celery, sys; sys.exit(not celery.__version__.startswith("5.2."))' 2>/dev/null ||
	apt_missing+=(python3-celery)
/usr/bin/python3 -c 'import redis' 2>/dev/null || apt_missing+=(python3-redis)
/usr/bin/python3 -c 'import msgpack' 2>/dev/null || apt_missing+=(python3-msgpack)
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
{ [ -x "$(pg_bin)/initdb" ] && [ -x "$(pg_bin)/pg_ctl" ] && id postgres >/dev/null 2>&1; } || apt_missing+=(postgresql)
rabbit_sbin=/usr/lib/rabbitmq/bin
{ [ -x "$rabbit_sbin/rabbitmq-server" ] && [ -x "$rabbit_sbin/rabbitmqctl" ]; } || apt_missing+=(rabbitmq-server)

# The rabbitmq-server package (and erlang's epmd) would start a system node on 5672/25672/4369 on
# install. The tests start their own nodes, so keep invoke-rc.d from starting anything for the
# duration of the install (policy-rc.d exit 101 = "action forbidden"), unless a policy is already
# in place (Docker images ship one that does the same), and stop the service if it ran anyway.
policy_rc=/usr/sbin/policy-rc.d
policy_added=
cleanup_policy() { if [ -n "$policy_added" ]; then as_root rm -f "$policy_rc"; policy_added=; fi; }
trap cleanup_policy EXIT

if [ ${#apt_missing[@]} -gt 0 ]; then
	log "apt-get install ${apt_missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if [ ! -e "$policy_rc" ]; then
		printf '#!/bin/sh\n# added by celerybridge .ci/setup.sh during apt-get install\nexit 101\n' |
			as_root tee "$policy_rc" >/dev/null
		as_root chmod 755 "$policy_rc"
		policy_added=1
	fi
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
	cleanup_policy
	if [[ " ${apt_missing[*]} " == *" rabbitmq-server "* ]]; then
		# Where a service manager ignored the policy: stop and disable the system node and epmd.
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			as_root systemctl disable --now rabbitmq-server.service epmd.socket epmd.service >/dev/null 2>&1 || true
		elif [ -x /etc/init.d/rabbitmq-server ] && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
			log "stopping the system rabbitmq-server the package started"
			as_root /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
		fi
	fi
fi

# --- Go tools, pinned ---------------------------------------------------------------------------
if ! "$TOOLS/staticcheck" -version 2>/dev/null | grep -q "(${STATICCHECK#v})"; then
	log "go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK"
	GOBIN=$TOOLS go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK"
fi

# --- venv with the pinned PyPI Celery ----------------------------------------------------------
req_hash=$(sha256sum "$REQ" | cut -d' ' -f1)
venv_ok() {
	[ -x "$VENV/bin/python" ] &&
		[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$req_hash" ] &&
		"$VENV/bin/python" -c "import celery, redis, kombu.transport.redis; assert celery.__version__ == '$WANT_CELERY'" 2>/dev/null
}

if ! venv_ok; then
	py=${PYTHON:-}
	if [ -z "$py" ]; then
		py=$(command -v python3 || true)
		# the venv module may be missing from the first python3 on PATH; Debian's has python3-venv
		if [ -z "$py" ] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
			py=/usr/bin/python3
		fi
	fi
	if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
		log "apt-get install python3-venv"
		export DEBIAN_FRONTEND=noninteractive
		as_root apt-get update -qq
		as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
	fi
	if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
		log "creating venv $VENV with $py ($("$py" --version 2>&1))"
		rm -rf "$VENV"
		"$py" -m venv "$VENV"
	fi
	log "pip install -r examples/python/requirements.txt"
	"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
	"$VENV/bin/python" -c "import celery, redis, kombu.transport.redis; assert celery.__version__ == '$WANT_CELERY', celery.__version__"
	echo "$req_hash" >"$VENV/.requirements.sha256"
fi

log "ok: $("$TOOLS/staticcheck" -version), redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), celery $(/usr/bin/python3 -c 'import celery; print(celery.__version__)') (/usr/bin/python3), celery $("$VENV/bin/python" -c 'import celery; print(celery.__version__)') ($VENV), $("$(pg_bin)/pg_ctl" --version), rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?')"
