#!/usr/bin/env bash
# bench-enroll.sh - enrollments per minute of a real `kiln serve`, on SQLite and on
# PostgreSQL, loaded by simulated agents on the same machine.
#
# The load generator is BenchmarkEnrollHTTPS (internal/enroll) in its external mode:
# each simulated agent runs the agent's own enrollment code (agent.EnrollSession: a
# TLS connection to the pinned CA, a P-256 key, a CSR carrying the connection's
# channel binding, POST /enroll, the certificate checked) and makes one mTLS call
# (GET /agent/v1/self) through the agent's transport, on the connection it enrolled
# on. Sub-benchmarks: keys made ahead of the clock or inline, and the call made on a
# new connection with the machine certificate (call=reconnect: two handshakes).
#
#   kiln   kiln serve --listen 127.0.0.1:0 --https-listen 127.0.0.1:0, its own data
#          dir, JSON logs to a file; a profile "worker" and one join token of
#          1,000,000 uses made with the CLI
#   pg     for the PostgreSQL run: a throwaway cluster of the installed PostgreSQL
#          (durable: fsync and synchronous_commit on), Unix socket only
#
# Output: go test's benchmark lines (enroll/min, p50/p99 latency, the agents' and the
# server's CPU per enrollment) for each store and each number of concurrent agents,
# and the server-side CPU including PostgreSQL's.
#
# Requirements: go, curl; postgresql for the PostgreSQL run (installed when missing,
# as root). KILN=path/to/kiln (default bin/kiln, built when missing).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  -s LIST   stores (default: sqlite,postgres)
  -c LIST   concurrent agents (default: 32,256)
  -n N      enrollments per benchmark (default: 20000)
  -b REGEX  sub-benchmarks (default: all; e.g. 'keygen=ahead/call=bound')
EOF
}

STORES=sqlite,postgres CLIENTS=32,256 N=20000 SUB=.
while getopts "s:c:n:b:h" o; do
    case $o in
    s) STORES=$OPTARG ;;
    c) CLIENTS=$OPTARG ;;
    n) N=$OPTARG ;;
    b) SUB=$OPTARG ;;
    *) usage; exit 2 ;;
    esac
done
trap kb_cleanup EXIT
trap 'exit 130' INT TERM
kb_kiln
command -v curl >/dev/null || kb_install curl:curl
WORK=$(mktemp -d /tmp/bench-enroll.XXXXXX)
: >"$WORK/results"
kb_log "work dir $WORK; $(kb_load)"

# pg_start: a throwaway PostgreSQL cluster in $WORK/pg; sets DBURL.
pg_start() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ]; then
        kb_install pg_ctlcluster:postgresql
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    local as=()
    mkdir -p "$WORK/pg"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$WORK/pg"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >"$WORK/pg/initdb.log" 2>&1 ||
        kb_die "initdb failed: $(tail -3 "$WORK/pg/initdb.log")"
    kb_start "$WORK/pg/postgres.log" "${as[@]}" "$bin/postgres" -D "$WORK/pg/data" -k "$WORK/pg" -p 5432 \
        -c listen_addresses= -c max_connections=200 -c shared_buffers=256MB
    PG_PGID=$KB_LAST_PID
    local i
    for ((i = 0; i < 300; i++)); do
        "${as[@]}" "$bin/pg_isready" -q -h "$WORK/pg" -p 5432 && break
        sleep 0.1
    done
    "${as[@]}" "$bin/createdb" -h "$WORK/pg" -p 5432 -U postgres kiln || kb_die "createdb failed"
    DBURL="postgres://postgres@/kiln?host=$WORK/pg&port=5432&sslmode=disable"
}

# run STORE: kiln serve on STORE, then the benchmarks.
run() {
    local store=$1 dir=$WORK/$1 db="" https="" i
    mkdir -p "$dir"
    PG_PGID=
    if [ "$store" = postgres ]; then
        pg_start
        db=$DBURL
    fi
    kb_start "$dir/serve.log" "$KILN" serve --data-dir "$dir" --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
        --tftp-listen "" --database "$db" --log-format json
    local kiln=$KB_LAST_PID
    for ((i = 0; i < 300; i++)); do
        https=$(sed -n 's/.*"msg":"kiln serving https","listen":"\([^"]*\)".*/\1/p' "$dir/serve.log")
        [ -n "$https" ] && break
        kb_alive "$kiln" || kb_die "kiln serve exited: $(tail -3 "$dir/serve.log")"
        sleep 0.1
    done
    [ -n "$https" ] || kb_die "kiln serve did not start: $(tail -3 "$dir/serve.log")"
    printf 'kind: Profile\nmetadata:\n  name: worker\nspec:\n  boot:\n    agent: true\n' >"$dir/profile.yaml"
    "$KILN" --data-dir "$dir" apply -f "$dir/profile.yaml" >/dev/null
    local token
    token=$("$KILN" --data-dir "$dir" join-token create --profile worker --max-uses 1000000 --ttl 6h)
    curl -sfk "https://$https/ca.crt" -o "$dir/ca.pem"
    local c t0 t1 before runs
    for c in ${CLIENTS//,/ }; do
        t0=0
        [ -n "$PG_PGID" ] && t0=$(kb_pg_ticks "$PG_PGID")
        before=$(wc -l <"$WORK/results")
        KILN_BENCH_CLIENTS=$c KILN_BENCH_ENROLL_URL=https://$https KILN_BENCH_ENROLL_TOKEN=$token \
            KILN_BENCH_ENROLL_CA=$dir/ca.pem KILN_BENCH_ENROLL_PID=$kiln \
            kb_run go test -run '^$' -bench "EnrollHTTPS/store=external/.*$SUB" -benchtime "${N}x" -timeout 60m ./internal/enroll |
            grep -E '^Benchmark' | sed "s/store=external/store=$store/" | tee -a "$WORK/results"
        runs=$(($(wc -l <"$WORK/results") - before))
        if [ -n "$PG_PGID" ] && [ "$runs" -gt 0 ]; then
            t1=$(kb_pg_ticks "$PG_PGID")
            # Ticks are 10 ms; this includes the agents' key generation pauses (PostgreSQL idle).
            echo "    postgres CPU: $(kb_fmt %.0f "($t1 - $t0) * 10000 / ($N * $runs)") µs per enrollment, to add to server-cpu-µs/op"
        fi
    done
    kb_stop "$kiln"
    [ -n "$PG_PGID" ] && kb_stop "$PG_PGID"
    return 0
}

for s in ${STORES//,/ }; do
    case $s in
    sqlite | postgres) run "$s" ;;
    *) kb_die "unknown store $s" ;;
    esac
done
