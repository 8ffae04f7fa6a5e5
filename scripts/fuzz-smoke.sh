#!/usr/bin/env bash
# Runs every Go fuzz target for a short time (default 10s each): a smoke test that the
# parsers survive random input. Longer runs: scripts/fuzz-smoke.sh 10m
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func \(Fuzz[A-Za-z0-9_]*\)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}' | sed 's/(.*//'); do
    echo "fuzz $pkg $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg" >/tmp/kiln-fuzz.log 2>&1 || { cat /tmp/kiln-fuzz.log; exit 1; }
  done
done
