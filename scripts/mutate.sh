#!/usr/bin/env bash
# Mutation testing with gremlins (issue 20): for each package, gremlins changes one
# operator at a time in the code its tests cover and runs the package's tests; a
# mutant the tests still pass ("lived") is a bug they would not catch.
#
#   scripts/mutate.sh [PKG...]   PKG: a directory under internal/ (audit, dhcp ...)
#
# Default: the security- and data-critical packages, small ones first. Prints per
# package the counts and the efficacy, killed/(killed+lived) %, and lists the
# survivors; scores are recorded in TESTING.md. Slow (minutes to an hour per big
# package): not part of `make test`.
#
# Environment: GREMLINS (a gremlins binary to use instead of installing the pinned
# version), MUTATE_TIMEOUT_COEFFICIENT (default 10: a mutant's test run may take
# that many times the unmutated run before it counts as timed out; high because
# the machine is shared), MUTATE_WORKERS (default 1), MUTATE_OUT (directory for
# the logs and JSON results; default a new temporary directory), MUTATE_ARGS
# (more gremlins flags, split on spaces: e.g. "-E dhcpstore/ -E server\.go$" to
# leave files out of a run).
set -euo pipefail

cd "$(dirname "$0")/.."

# Pinned: the module proxy serves this version; it is not in go.mod (a tool of
# this script only).
GREMLINS_MODULE=github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
coefficient=${MUTATE_TIMEOUT_COEFFICIENT:-10}
workers=${MUTATE_WORKERS:-1}
out=${MUTATE_OUT:-$(mktemp -d -t kiln-mutate.XXXXXX)}
mkdir -p "$out"

gremlins=${GREMLINS:-}
if [[ -z $gremlins ]]; then
	gobin=$(mktemp -d -t kiln-gremlins.XXXXXX)
	trap 'rm -rf "$gobin"' EXIT
	GOBIN=$gobin go install "$GREMLINS_MODULE"
	gremlins=$gobin/gremlins
fi

# gremlins times its coverage run to set each mutant's timeout; a cached test
# result (a second run on an unchanged tree) would make that run take a fraction
# of a second and every mutant "time out". -count=1 keeps the runs real.
export GOFLAGS="-count=1${GOFLAGS:+ $GOFLAGS}"

pkgs=("$@")
if ((${#pkgs[@]} == 0)); then
	pkgs=(audit inventory api secrets tftp enroll dhcp)
fi

echo "results in $out"
status=0
for pkg in "${pkgs[@]}"; do
	dir=./internal/$pkg
	if [[ ! -d $dir ]]; then
		echo "$pkg: no directory $dir" >&2
		status=1
		continue
	fi
	log=$out/${pkg//\//_}.log
	start=$(date +%s)
	# gremlins exits non-zero only on missed thresholds (none are set) or when the
	# unmutated tests fail; keep going with the other packages either way.
	# shellcheck disable=SC2086 # MUTATE_ARGS is a list of flags
	if ! "$gremlins" unleash --workers "$workers" --timeout-coefficient "$coefficient" ${MUTATE_ARGS:-} \
		--output "$out/${pkg//\//_}.json" "$dir" >"$log" 2>&1; then
		echo "$pkg: gremlins failed, see $log" >&2
		status=1
	fi
	secs=$(($(date +%s) - start))
	# One line per mutant: "  KILLED CONDITIONALS_NEGATION at internal/x/y.go:12:3".
	count() { grep -cE "^[[:space:]]*$1 " "$log" || true; }
	killed=$(count KILLED) lived=$(count LIVED) timedout=$(count 'TIMED OUT')
	notcovered=$(count 'NOT COVERED') notviable=$(count 'NOT VIABLE')
	reached=$((killed + lived))
	efficacy=n/a
	if ((reached > 0)); then
		efficacy=$(awk -v k="$killed" -v r="$reached" 'BEGIN { printf "%.1f", 100 * k / r }')
	fi
	printf '%s: killed/(killed+lived) %s%% (%d/%d); timed out %d, not covered %d, not viable %d; %ds\n' \
		"$pkg" "$efficacy" "$killed" "$reached" "$timedout" "$notcovered" "$notviable" "$secs"
	grep -E '^[[:space:]]*LIVED ' "$log" | sed "s/^[[:space:]]*/  $pkg survivor: /" || true
done
exit "$status"
