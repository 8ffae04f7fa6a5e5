#!/usr/bin/env bash
# Runs every Go fuzz target for a short time (default 10s each): a smoke test that the
# parsers survive random input. Longer runs: scripts/fuzz-smoke.sh 10m
#
# A run that fails only with Go's "context deadline exceeded" at the end of its
# -fuzztime, having written no failing input, is the fuzzing coordinator's
# shutdown race (golang/go#75804), not a finding: it is run once more. A real
# finding (a failing input written, a panic, a t.Fatal) fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func \(Fuzz[A-Za-z0-9_]*\)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}' | sed 's/(.*//'); do
    for try in 1 2; do
      echo "fuzz $pkg $f ($t)"
      if go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
        break
      fi
      if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" &&
        ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
        echo "fuzz $pkg $f: the coordinator's deadline race (no failing input); running it again"
        continue
      fi
      cat "$log"
      exit 1
    done
  done
done
