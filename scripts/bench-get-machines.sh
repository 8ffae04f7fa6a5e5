#!/usr/bin/env bash
# Benchmark: `kiln get machines` on an inventory of N machines (default 100000) on the
# embedded store: wall time of the command (3 runs) and the server's peak memory.
# Usage: scripts/bench-get-machines.sh [N] [DATABASE_URL]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
db=${2:-}
KILN=${KILN:-$PWD/bin/kiln}
dir=$(mktemp -d /tmp/kiln-bench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
export KILN_DATA_DIR=$dir/data
args=(serve --listen 127.0.0.1:0 --tftp-listen= --log-level warn --max-body-bytes 67108864)
[ -n "$db" ] && args+=(--database "$db")
"$KILN" "${args[@]}" &
pid=$!
for _ in $(seq 1 200); do [ -s "$dir/data/server.url" ] && break; sleep 0.1; done
url=$(cat "$dir/data/server.url")
until curl -fsS "$url/readyz" >/dev/null 2>&1; do sleep 0.1; done

chunk=10000
echo "loading $n machines in applies of $chunk ..."
t0=$(date +%s.%N)
for ((start = 0; start < n; start += chunk)); do
  end=$((start + chunk)); ((end > n)) && end=$n
  awk -v s="$start" -v e="$end" 'BEGIN {
    for (i = s; i < e; i++) {
      printf "---\nkind: Machine\nmetadata:\n  name: node-%06d\n  labels: {rack: r%d, role: %s}\n", i, i % 40, (i % 3 ? "web" : "db")
      printf "spec:\n  interfaces:\n    - mac: \"02:00:%02x:%02x:%02x:%02x\"\n      ip: 10.%d.%d.%d\n", int(i/16777216)%256, int(i/65536)%256, int(i/256)%256, i%256, int(i/65536)%256, int(i/256)%256, i%256
    }
  }' > "$dir/chunk.yaml"
  "$KILN" apply -f "$dir/chunk.yaml" >/dev/null
done
t1=$(date +%s.%N)
printf 'load: %d machines in %.1f s\n' "$n" "$(echo "$t1 - $t0" | bc)"

for run in 1 2 3; do
  s=$(date +%s.%N)
  lines=$("$KILN" get machines | wc -l)
  e=$(date +%s.%N)
  printf 'run %d: kiln get machines -> %d rows in %.2f s\n' "$run" "$((lines - 1))" "$(echo "$e - $s" | bc)"
done
s=$(date +%s.%N)
"$KILN" get machines -l role=db,rack=r7 -o name | wc -l | xargs printf 'selector role=db,rack=r7 -> %d machines'
e=$(date +%s.%N)
printf ' in %.2f s\n' "$(echo "$e - $s" | bc)"
s=$(date +%s.%N)
"$KILN" get machine node-054321 -o name >/dev/null
e=$(date +%s.%N)
printf 'get one machine: %.3f s\n' "$(echo "$e - $s" | bc)"
grep -E 'VmHWM|VmRSS' /proc/$pid/status | sed 's/^/server /'
du -sh "$dir/data" | awk '{print "data dir: " $1}'
