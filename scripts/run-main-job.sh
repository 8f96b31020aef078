#!/bin/bash
# make run: the main job on a fresh Debian 12 machine, as root.
# Installs what is missing, starts dockerd if it is not running, bootstraps the
# base image (mmdebstrap, once), then runs conjuringd in the foreground with the
# shipped custom/ and temporary state folders, and prints the URL and a login
# as soon as a student can really log in.
#
# Usage: scripts/run-main-job.sh [--exit-when-ready] [--state DIR] [--timeout SECONDS] [--no-host-ca]
#   --exit-when-ready  stop the daemon and exit 0 once a student logged in (CI)
#   --state DIR        keep state there instead of a new /tmp/conjuring-run.XXXX
#   --no-host-ca       do not add this machine's CA bundle to the configuration.
#                      By default the local configuration is the shipped custom/
#                      plus certs/host-ca.crt (this machine's trusted CAs), so the
#                      image build trusts a TLS-intercepting proxy as the host does
#                      (the product's certs/ feature, as a school would use it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
EXIT_WHEN_READY=0 STATE="" TIMEOUT=1800 HOST_CA=1
while [ $# -gt 0 ]; do
  case "$1" in
    --exit-when-ready) EXIT_WHEN_READY=1 ;;
    --state) STATE=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --no-host-ca) HOST_CA=0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root (it starts dockerd and builds the hub image)" >&2; exit 1; }

bash .ci/install-deps.sh
[ -x .venv/bin/python ] || make venv
PY=$REPO/.venv/bin/python
"$PY" -c 'from tests.support.docker import ensure_dockerd, ensure_base_image; ensure_dockerd(); ensure_base_image()'

STATE=${STATE:-$(mktemp -d /tmp/conjuring-run.XXXX)}
mkdir -p "$STATE/state" "$STATE/etc" "$STATE/run"
echo "conjuringd state under $STATE (state/, etc/, run/); daemon log: $STATE/conjuringd.log"
if [ $HOST_CA = 1 ] && [ ! -e "$STATE/etc/custom" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cp -r "$REPO/custom" "$STATE/etc/custom"
  mkdir -p "$STATE/etc/custom/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$STATE/etc/custom/certs/host-ca.crt"
  echo "configuration: shipped custom/ + certs/host-ca.crt in $STATE/etc/custom"
fi

"$PY" -m conjuringd.daemon --state-dir "$STATE/state" --config-dir "$STATE/etc" --runtime-dir "$STATE/run" \
  --default-custom "$REPO/custom" --hub docker --network none --usb none \
  > >(tee "$STATE/conjuringd.log") 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null' INT TERM

if "$PY" -m conjuringd.adapters.hub_ready "$STATE/run/status.json" "$REPO/custom/users.csv" \
     --passwords "$STATE/state/secrets/generated-passwords.json" --timeout "$TIMEOUT"; then
  if [ $EXIT_WHEN_READY = 1 ]; then
    kill -TERM $DAEMON; wait $DAEMON || true
    /usr/bin/docker rm -f conjuring >/dev/null 2>&1 || true  # the hub outlives the daemon by design; not here
    exit 0
  fi
else
  kill -TERM $DAEMON 2>/dev/null || true
  wait $DAEMON || true
  exit 1
fi
wait $DAEMON
