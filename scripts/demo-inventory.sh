#!/usr/bin/env bash
# Inventory walk-through on the embedded store (no root, no VM): start `kiln serve`,
# apply the example fleet, show it and the audit log, verify the hash chain, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-$PWD/bin/kiln}
dir=$(mktemp -d /tmp/kiln-demo.XXXXXX)
port=${KILN_DEMO_PORT:-18080}
export KILN_DATA_DIR=$dir KILN_SERVER=http://127.0.0.1:$port
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "kiln serve --data-dir $dir --listen 127.0.0.1:$port"
"$KILN" serve --listen "127.0.0.1:$port" --tftp-listen= --log-level warn &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

step "$KILN" apply -f examples/
step "$KILN" get machines
step "$KILN" get machines -l role=web -o yaml
step "$KILN" describe machine web-1
step "$KILN" apply -f examples/   # a second apply changes nothing
step "$KILN" audit list
step "$KILN" audit verify
echo
echo "stopping kiln serve (SIGTERM)"
kill -TERM "$pid"; wait "$pid"; pid=
echo "demo done"
