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
# Each measurement runs against a fresh kiln serve (and, on PostgreSQL, a new
# database of the cluster), so that runs do not load each other's machines.
#
#   nginx  the peer (BenchmarkEnrollPeer): the same simulated agents doing the same
#          TLS and HTTP work (connection, channel-bound CSR, POST /enroll with the
#          same body, GET /agent/v1/self on the same connection) against nginx
#          (2 workers, TLS 1.3, P-256, no tickets) answering both with a constant
#          body of the size of Kiln's answers: the cost of the transport alone.
#
# Output: go test's benchmark lines (enroll/min, p50/p99 latency, the agents' and the
# server's CPU per enrollment) for each store, number of concurrent agents and
# sub-benchmark, and PostgreSQL's CPU per enrollment.
#
# Requirements: go, curl; postgresql for the PostgreSQL run (installed when missing,
# as root). KILN=path/to/kiln (default: bin/kiln, built from this tree).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  -s LIST   stores (default: sqlite,postgres; "none": the peer only)
  -c LIST   concurrent agents (default: 32,64,256)
  -n N      enrollments per benchmark (default: 20000)
  -m LIST   sub-benchmarks (default: keygen=ahead/call=bound,keygen=inline/call=bound,
            keygen=ahead/call=reconnect)
  -r N      runs of each (default: 1)
  -p LIST   concurrent agents for the nginx peer (default: those of -c; "none": no peer)
  -k        keep the data dirs
EOF
}

STORES=sqlite,postgres CLIENTS=32,64,256 N=20000 REPEAT=1 KEEP=0 PEER_CLIENTS=
MODES=keygen=ahead/call=bound,keygen=inline/call=bound,keygen=ahead/call=reconnect
while getopts "s:c:n:m:r:p:kh" o; do
    case $o in
    p) PEER_CLIENTS=$OPTARG ;;
    s) STORES=$OPTARG ;;
    c) CLIENTS=$OPTARG ;;
    n) N=$OPTARG ;;
    m) MODES=$OPTARG ;;
    r) REPEAT=$OPTARG ;;
    k) KEEP=1 ;;
    *) usage; exit 2 ;;
    esac
done
[ -n "$PEER_CLIENTS" ] || PEER_CLIENTS=$CLIENTS
[ "$PEER_CLIENTS" = none ] && PEER_CLIENTS=
trap kb_cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${KILN:-}" ]; then   # this tree's kiln, rebuilt if the sources changed
    KILN=$PWD/bin/kiln
    CGO_ENABLED=0 go build -trimpath -o "$KILN" ./cmd/kiln || kb_die "go build failed"
fi
kb_kiln
command -v curl >/dev/null || kb_install curl:curl
WORK=$(mktemp -d /tmp/bench-enroll.XXXXXX)
: >"$WORK/results"
kb_log "work dir $WORK; $(kb_load)"

# pg_start: a throwaway PostgreSQL cluster in $WORK/pg (PG_PGID, PG_BIN, PG_AS).
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
        chmod 755 "$WORK"
        chown postgres: "$WORK/pg"
        as=(runuser -u postgres --)
    fi
    PG_BIN=$bin PG_AS=("${as[@]}")
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
}

# pg_ticks: CPU ticks of the PostgreSQL cluster: the postmaster and its children,
# exited ones included (the children start sessions of their own, so they are not in
# the group kb_start recorded).
pg_ticks() {
    local pm f line rest sum=0
    pm=$(head -1 "$WORK/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        [ "${f#/proc/}" = "$pm/stat" ] || [ "${2:-}" = "$pm" ] || continue
        sum=$((sum + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$sum"
}

# kiln_start STORE DIR: a fresh kiln serve (for postgres, on a new database of the
# cluster) with the profile and the token; sets KILN_PID, HTTPS, TOKEN.
kiln_start() {
    local store=$1 dir=$2 db="" i
    mkdir -p "$dir"
    if [ "$store" = postgres ]; then
        [ -n "$PG_PGID" ] || pg_start
        DBN=$((${DBN:-0} + 1))
        "${PG_AS[@]}" "$PG_BIN/createdb" -h "$WORK/pg" -p 5432 -U postgres "kiln$DBN" || kb_die "createdb failed"
        db="postgres://postgres@/kiln$DBN?host=$WORK/pg&port=5432&sslmode=disable"
    fi
    # Every simulated agent comes from 127.0.0.1, where a fleet's machines each have
    # an address of their own: the per-source enroll limit would measure itself.
    kb_start "$dir/serve.log" "$KILN" serve --data-dir "$dir" --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
        --tftp-listen "" --database "$db" --log-format json --rate-limit enroll=off
    KILN_PID=$KB_LAST_PID HTTPS=
    for ((i = 0; i < 300; i++)); do
        HTTPS=$(sed -n 's/.*"msg":"kiln serving https","listen":"\([^"]*\)".*/\1/p' "$dir/serve.log")
        [ -n "$HTTPS" ] && break
        kb_alive "$KILN_PID" || kb_die "kiln serve exited: $(tail -3 "$dir/serve.log")"
        sleep 0.1
    done
    [ -n "$HTTPS" ] || kb_die "kiln serve did not start: $(tail -3 "$dir/serve.log")"
    printf 'kind: Profile\nmetadata:\n  name: worker\nspec:\n  boot:\n    agent: true\n' >"$dir/profile.yaml"
    "$KILN" --data-dir "$dir" apply -f "$dir/profile.yaml" >/dev/null
    TOKEN=$("$KILN" --data-dir "$dir" join-token create --profile worker --max-uses 1000000 --ttl 6h 2>/dev/null)
    curl -sfk "https://$HTTPS/ca.crt" -o "$dir/ca.pem"
}

# bench STORE CLIENTS MODE: one sub-benchmark against a fresh kiln serve.
bench() {
    local store=$1 c=$2 mode=$3 dir t0=0 t1 before
    RUN=$((${RUN:-0} + 1))
    dir=$WORK/run$RUN
    kiln_start "$store" "$dir"
    [ -n "$PG_PGID" ] && t0=$(pg_ticks)
    before=$(wc -l <"$WORK/results")
    KILN_BENCH_CLIENTS=$c KILN_BENCH_ENROLL_URL=https://$HTTPS KILN_BENCH_ENROLL_TOKEN=$TOKEN \
        KILN_BENCH_ENROLL_CA=$dir/ca.pem KILN_BENCH_ENROLL_PID=$KILN_PID \
        kb_run go test -run '^$' -bench "EnrollHTTPS/store=external/$mode/" -benchtime "${N}x" -timeout 60m ./internal/enroll |
        grep -E '^Benchmark' | sed "s/store=external/store=$store/" | tee -a "$WORK/results"
    if [ -n "$PG_PGID" ] && [ "$(wc -l <"$WORK/results")" -gt "$before" ]; then
        t1=$(pg_ticks)
        # Ticks are 10 ms.
        echo "    postgres CPU: $(kb_fmt %.0f "($t1 - $t0) * 10000 / $N") µs per enrollment, to add to server-cpu-µs/op"
    fi
    kb_stop "$KILN_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

# peer CLIENTS: the same agents' transport work (BenchmarkEnrollPeer) against nginx
# answering both requests with a constant body of the size of Kiln's answers.
peer() {
    local c=$1 st=$WORK/nginx port t0 t1 i
    kb_install nginx:nginx-light openssl:openssl
    port=$((20000 + $$ % 20000))
    if [ ! -f "$st/srv.pem" ]; then
        mkdir -p "$st"
        chmod 755 "$WORK" "$st"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$st/ca.key" -out "$st/ca.pem" \
            -subj /CN=peer-ca -days 1 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$st/srv.key" -out "$st/srv.csr" \
            -subj /CN=127.0.0.1 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$st/ext.cnf"
        openssl x509 -req -in "$st/srv.csr" -CA "$st/ca.pem" -CAkey "$st/ca.key" -CAcreateserial -days 1 \
            -extfile "$st/ext.cnf" -out "$st/leaf.pem" 2>/dev/null
        cat "$st/leaf.pem" "$st/ca.pem" >"$st/srv.pem"   # the chain, as Kiln sends it
        chmod 644 "$st"/*
        # Kiln's answer to an enrollment is ~1.9 kB (certificate and CA chain in PEM).
        local big
        big=$(head -c 1900 /dev/zero | tr '\0' 'x')
        cat >"$st/nginx.conf" <<EOF
worker_processes 2;
pid $st/nginx.pid;
error_log $st/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $st/body; proxy_temp_path $st/proxy;
    fastcgi_temp_path $st/fastcgi; uwsgi_temp_path $st/uwsgi; scgi_temp_path $st/scgi;
    server {
        listen 127.0.0.1:$port ssl backlog=4096;
        ssl_certificate $st/srv.pem; ssl_certificate_key $st/srv.key;
        ssl_protocols TLSv1.3; ssl_ecdh_curve prime256v1; ssl_session_tickets off;
        default_type application/json;
        location = /enroll { return 200 '{"c":"$big"}'; }
        location / { return 200 '{"machine":"m-525400000001","state":"new"}'; }
    }
}
EOF
    fi
    kb_start "$st/server.log" nginx -p "$st/" -c "$st/nginx.conf" -e "$st/error.log" -g 'daemon off;'
    local npg=$KB_LAST_PID
    for ((i = 0; i < 100; i++)); do
        curl -sf --cacert "$st/ca.pem" -o /dev/null "https://127.0.0.1:$port/agent/v1/self" && break
        sleep 0.1
    done
    t0=$(kb_pg_ticks "$npg")
    KILN_BENCH_CLIENTS=$c KILN_BENCH_PEER_URL=https://127.0.0.1:$port KILN_BENCH_PEER_CA=$st/ca.pem \
        kb_run go test -run '^$' -bench "EnrollPeer/" -benchtime "${N}x" -timeout 60m ./internal/enroll |
        grep -E '^Benchmark' | tee -a "$WORK/results"
    t1=$(kb_pg_ticks "$npg")
    echo "    nginx CPU: $(kb_fmt %.0f "($t1 - $t0) * 10000 / $N") µs per agent"
    kb_stop "$npg"
}

PG_PGID=
for c in ${PEER_CLIENTS//,/ }; do
    for ((r = 0; r < REPEAT; r++)); do peer "$c"; done
done
[ "$STORES" = none ] && STORES=
for s in ${STORES//,/ }; do
    case $s in sqlite | postgres) ;; *) kb_die "unknown store $s" ;; esac
    for c in ${CLIENTS//,/ }; do
        for m in ${MODES//,/ }; do
            for ((r = 0; r < REPEAT; r++)); do bench "$s" "$c" "$m"; done
        done
    done
    [ -n "$PG_PGID" ] && kb_stop "$PG_PGID" && PG_PGID=
done
kb_log "results in $WORK/results"
