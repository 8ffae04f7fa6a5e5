#!/usr/bin/env bash
# bench-dhcp.sh - DHCPv4 throughput of Kiln against Kea and dnsmasq, in the same run
# and under the same conditions, with ISC's perfdhcp; then checks that Kiln's
# leases survive kill -9.
#
#   netns kbds-<pid>                          netns kbdc-<pid>
#   [ kiln serve | kea-dhcp4 | dnsmasq ]      [ perfdhcp (a relay) ]
#   kbs0 10.96.0.1/12  <===== veth =====>     kbc0 10.96.0.2/12
#
# perfdhcp always acts as a relay agent: giaddr = 10.96.0.2, hops 1, and it wants
# the replies at 10.96.0.2:67. Kiln picks the Subnet whose cidr contains giaddr
# (RFC 2131 4.3.1), so the Subnet applied is 10.96.0.0/12 with the pool
# 10.96.1.0-10.111.255.250 (~1.05 million addresses: every rate runs the full
# period without draining the pool; with -N 16 the /16 of ../shared's peerbench,
# periods cut to rate*period <= 58,000).
#
# Servers (one after another, each freshly started for every rate step, empty state):
#   kiln     kiln serve, embedded SQLite store in the step's state dir (WAL,
#            synchronous=NORMAL: a committed lease survives the process dying), a
#            lease is committed before its ACK leaves; --log-level warn
#   kea      Kea 2.2 kea-dhcp4, memfile persist=true (lease file on disk,
#            lfc-interval 3600), multi-threading off (2.2's default), logging WARN
#   dnsmasq  dnsmasq, lease file on disk, dhcp-authoritative, no-ping, quiet-dhcp
#
# Method (ISC's): for each offered rate, ascending, run
#   perfdhcp -4 -l kbc0 -g single -r RATE -R CLIENTS -p PERIOD -W 500000
# Server and perfdhcp run at nice -10 (-n): on a shared box the other work then
# takes CPU from neither (the same for every server).
# drop = 1 - ACKs / DISCOVERs sent; a rate passes with drop < 2.5 %. The sweep stops
# at the first failing rate and bisects between the last pass and the first fail
# (-b steps; if the first rate fails it halves). Result per server: the highest
# passing rate and the ACKs per second measured at it (leases/s). CPU: server on
# CPU 1, perfdhcp on CPU 0 (-c split); the server's CPU use is printed (~100 %:
# the server is the limit). GEN-LIMITED marks runs where perfdhcp could not send
# 97 % of the rate (the load generator is the limit, not the server).
#
# Durability (Kiln, unless -K): (a) DORA at a moderate rate for 4 s, kill -9 right
# after perfdhcp ends, restart on the same data dir: `kiln get leases -o name | wc -l`
# must have grown by the ACKs perfdhcp received (equal when no reply was lost;
# more when an ACK left after its lease was committed but did not reach perfdhcp,
# or an offer got no REQUEST: the check is bound leases >= ACKs), perfdhcp waiting
# 3 s for late replies; (b) kill -9 in the
# middle of a run: the bound leases after the restart must be >= the ACKs received
# (every ACK was sent after its lease was committed). perfdhcp draws client MACs at
# random from -R clients, so these runs use 4e9 of them (no client twice).
#
# Output: "run ..." lines, "SUMMARY dhcp ..." lines and a table with the ratios
# Kiln/Kea and Kiln/dnsmasq. Logs and perfdhcp reports stay in the work dir.
#
# Requirements (installed when missing, as root): kea-admin (perfdhcp),
# kea-dhcp4-server, dnsmasq-base, curl, iproute2, util-linux. KILN=path/to/kiln
# (default bin/kiln, built when missing).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  -s LIST   servers, comma separated (default: kiln,kea,dnsmasq)
  -r LIST   offered rates, ascending (default: 1000,2000,4000,8000,12000,16000,20000,24000,28000,32000)
  -p SEC    perfdhcp period (default: 10)
  -R N      simulated clients (default: 1000000)
  -b N      bisection steps after the first failing rate (default: 2)
  -T N      tries per rate: a failing rate is retried up to N-1 times (default: 2)
  -D PCT    max drop for a pass (default: 2.5)
  -N 12|16  address plan (default: 12, see above)
  -c MODE   split | same | none (default: split: server cpu1, perfdhcp cpu0)
  -n NICE   niceness of the servers and perfdhcp (default: -10; 0: as is)
  -K        skip the kill -9 durability check
  -k ARGS   extra kiln serve arguments (word-split)
  -w DIR    work dir (default: mktemp -d /tmp/bench-dhcp.XXXXXX); kept
  -h        help
EOF
}

SERVERS=kiln,kea,dnsmasq RATES=1000,2000,4000,8000,12000,16000,20000,24000,28000,32000 PERIOD=10 CLIENTS=1000000
BISECT=2 TRIES=2 MAXDROP=2.5 NPREFIX=12 PIN=split DURABILITY=1 KILN_EXTRA= WORK= NICE=-10
while getopts 's:r:p:R:b:T:D:N:c:n:Kk:w:h' opt; do
    case $opt in
        s) SERVERS=$OPTARG ;; r) RATES=$OPTARG ;; p) PERIOD=$OPTARG ;; R) CLIENTS=$OPTARG ;;
        b) BISECT=$OPTARG ;; T) TRIES=$OPTARG ;; D) MAXDROP=$OPTARG ;; N) NPREFIX=$OPTARG ;;
        c) PIN=$OPTARG ;; n) NICE=$OPTARG ;; K) DURABILITY=0 ;; k) KILN_EXTRA=$OPTARG ;; w) WORK=$OPTARG ;;
        h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
    esac
done

kb_need_root
kb_install perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server dnsmasq:dnsmasq-base curl:curl \
    ip:iproute2 taskset:util-linux setsid:util-linux
[[ $SERVERS == *kiln* ]] && kb_kiln

SRV_IF=kbs0 CLI_IF=kbc0 LEASE_TIME=3600
case $NPREFIX in
    12) SRV_IP=10.96.0.1 CLI_IP=10.96.0.2 PREFIX=12 NETMASK=255.240.0.0 SUBNET=10.96.0.0/12
        POOL_START=10.96.1.0 POOL_END=10.111.255.250 POOL_SIZE=1048315 ;;
    16) SRV_IP=10.99.0.1 CLI_IP=10.99.0.2 PREFIX=16 NETMASK=255.255.0.0 SUBNET=10.99.0.0/16
        POOL_START=10.99.1.0 POOL_END=10.99.255.250 POOL_SIZE=65275 ;;
    *) kb_die "-N must be 12 or 16" ;;
esac
POOL_BUDGET=$((POOL_SIZE * 9 / 10 / 1000 * 1000))
case $PIN in
    split) SRV_PIN=(taskset -c 1) CLI_PIN=(taskset -c 0) ;;
    same) SRV_PIN=(taskset -c 0) CLI_PIN=(taskset -c 0) ;;
    none) SRV_PIN=() CLI_PIN=() ;;
    *) kb_die "-c must be split, same or none" ;;
esac
SRV_PIN=(nice -n "$NICE" "${SRV_PIN[@]}") CLI_PIN=(nice -n "$NICE" "${CLI_PIN[@]}")

WORK=${WORK:-$(mktemp -d /tmp/bench-dhcp.XXXXXX)}
mkdir -p "$WORK/logs"
NS_SRV=kbds-$$ NS_CLI=kbdc-$$
cleanup() { kb_cleanup; rm -rf "$WORK/state"; kb_log "work dir (reports, logs): $WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

kb_netns_add "$NS_SRV"
kb_netns_add "$NS_CLI"
ip link add "$SRV_IF" netns "$NS_SRV" type veth peer name "$CLI_IF" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/$PREFIX" dev "$SRV_IF"
ip -n "$NS_CLI" addr add "$CLI_IP/$PREFIX" dev "$CLI_IF"
ip -n "$NS_SRV" link set "$SRV_IF" up
ip -n "$NS_CLI" link set "$CLI_IF" up
sleep 0.5

# ---- servers ---------------------------------------------------------------------
in_srv() { ip netns exec "$NS_SRV" "$@"; }
KILN_URL=http://127.0.0.1:8080

kiln_cli() { in_srv "${CLI_PIN[@]}" "$KILN" --data-dir "$1" "${@:2}"; }

# kiln_up STATE_DIR LOG: starts kiln serve on STATE_DIR/kiln; applies the Subnet
# unless it is there already (a restart).
kiln_up() {
    local st=$1 log=$2 i
    # shellcheck disable=SC2086
    kb_start "$log" ip netns exec "$NS_SRV" "${SRV_PIN[@]}" "$KILN" serve --data-dir "$st/kiln" \
        --listen 127.0.0.1:8080 --dhcp-interface "$SRV_IF" --tftp-listen= --log-level warn $KILN_EXTRA
    SRV_PG=$KB_LAST_PID
    for ((i = 0; i < 200; i++)); do
        kb_alive "$SRV_PG" || return 1
        in_srv curl -fsS -m 1 "$KILN_URL/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    [ -s "$st/kiln/server.url" ] || return 1
    if ! kiln_cli "$st/kiln" get subnet bench -o name >/dev/null 2>&1; then
        cat >"$st/subnet.yaml" <<EOF
kind: Subnet
metadata:
  name: bench
spec:
  cidr: $SUBNET
  mode: full
  pools:
    - start: $POOL_START
      end: $POOL_END
  router: $SRV_IP
  leaseTime: ${LEASE_TIME}s
  unknownMachines: allocate
EOF
        kiln_cli "$st/kiln" apply -f "$st/subnet.yaml" >>"$log.apply" 2>&1 || return 1
    fi
}

write_kea_conf() {
    cat >"$1/kea-dhcp4.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "$SRV_IF" ] },
  "lease-database": { "type": "memfile", "persist": true,
                      "name": "$1/kea-leases4.csv", "lfc-interval": 3600 },
  "multi-threading": { "enable-multi-threading": false },
  "valid-lifetime": $LEASE_TIME, "renew-timer": 900, "rebind-timer": 1800,
  "subnet4": [ { "id": 1, "subnet": "$SUBNET",
                 "pools": [ { "pool": "$POOL_START - $POOL_END" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                 "output_options": [ { "output": "$1/kea.log" } ] } ]
} }
EOF
}

SRV_PG=
start_server() {  # NAME STATE_DIR LOG
    local name=$1 st=$2 log=$3
    case $name in
        kiln) kiln_up "$st" "$log" || return 1 ;;
        kea)
            write_kea_conf "$st"
            kb_start "$log" env KEA_LOCKFILE_DIR="$st" KEA_PIDFILE_DIR="$st" \
                ip netns exec "$NS_SRV" "${SRV_PIN[@]}" kea-dhcp4 -c "$st/kea-dhcp4.json"
            SRV_PG=$KB_LAST_PID ;;
        dnsmasq)
            kb_start "$log" ip netns exec "$NS_SRV" "${SRV_PIN[@]}" \
                dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
                --interface="$SRV_IF" --bind-interfaces \
                --dhcp-range="$POOL_START,$POOL_END,$NETMASK,$LEASE_TIME" \
                --dhcp-authoritative --no-ping --dhcp-lease-max=2000000 \
                --dhcp-leasefile="$st/dnsmasq.leases" --quiet-dhcp \
                --log-facility="$st/dnsmasq.log" --pid-file= --user=root
            SRV_PG=$KB_LAST_PID ;;
        *) kb_die "unknown server $name" ;;
    esac
}

# parse_perfdhcp < report -> "DISC_SENT OFFERS REQ_SENT ACKS"
parse_perfdhcp() {
    awk '/Statistics for: DISCOVER-OFFER/ {s="do"} /Statistics for: REQUEST-ACK/ {s="ra"}
         /^sent packets:/ {sent[s]=$3} /^received packets:/ {recv[s]=$3}
         END {printf "%d %d %d %d\n", sent["do"], recv["do"], sent["ra"], recv["ra"]}'
}

perfdhcp_run() {  # args... -> report on stdout
    kb_run timeout -k 2 "$((PERIOD + 20))" ip netns exec "$NS_CLI" "${CLI_PIN[@]}" \
        perfdhcp -4 -l "$CLI_IF" -g single "$@" 2>&1 || true
}

wait_ready() {  # one DORA answered within 10 s
    local i out
    for ((i = 0; i < 40; i++)); do
        kb_alive "$SRV_PG" || return 1
        out=$(timeout 5 ip netns exec "$NS_CLI" "${CLI_PIN[@]}" perfdhcp -4 -l "$CLI_IF" -r 100 -n 3 -R 3 \
            -W 200000 -b mac=02:00:5e:00:53:01 2>&1 || true)
        [ "$(parse_perfdhcp <<<"$out" | awk '{print $4}')" -gt 0 ] 2>/dev/null && return 0
        sleep 0.25
    done
    return 1
}

# udp_rcvbuf_errors NETNS: datagrams the kernel dropped because a socket's receive
# buffer was full (the server's, or perfdhcp's when replies come in bursts)
udp_rcvbuf_errors() {
    ip netns exec "$1" awk '$1 == "Udp:" && !h {for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1; next}
        $1 == "Udp:" && h {print $c; exit}' /proc/net/snmp
}

CLK_TCK=$(getconf CLK_TCK)
# run_step NAME RATE -> STEP_OK STEP_LPS STEP_DROP STEP_CPU; 1 if the server broke
run_step_once() {
    local name=$1 rate=$2 st="$WORK/state/$1" log="$WORK/logs/$1-r$2.server.txt"
    local rep="$WORK/logs/$1-r$2.perfdhcp.txt" per=$PERIOD
    ((rate * per > POOL_BUDGET)) && per=$((POOL_BUDGET / rate))
    ((per < 1)) && per=1
    rm -rf "$st"; mkdir -p "$st"; sync; sleep 1
    if ! start_server "$name" "$st" "$log" || ! wait_ready; then
        echo "run  $name rate=$rate ERROR: server did not answer a DORA (see $log)"
        tail -n 5 "$log" | sed 's/^/    | /'
        kb_stop "$SRV_PG" 3
        return 1
    fi
    local t0 t1 tm="$WORK/logs/.time" real usr sys c0 c1 s0 s1
    c0=$(udp_rcvbuf_errors "$NS_CLI") s0=$(udp_rcvbuf_errors "$NS_SRV")
    t0=$(kb_pg_ticks "$SRV_PG")
    { TIMEFORMAT='%R %U %S'; time perfdhcp_run -r "$rate" -R "$CLIENTS" -p "$per" -W 500000 >"$rep"; } 2>"$tm"
    t1=$(kb_pg_ticks "$SRV_PG")
    STEP_RSS=$(kb_pg_hwm_mib "$SRV_PG")
    c1=$(udp_rcvbuf_errors "$NS_CLI") s1=$(udp_rcvbuf_errors "$NS_SRV")
    [ "$name" = kiln ] && { in_srv curl -fsS -m 5 "$KILN_URL/metrics" 2>/dev/null |
        grep -E '^kiln_(dhcp|store)' >"$WORK/logs/$name-r$rate.metrics.txt" || true; }
    kb_stop "$SRV_PG" 5
    read -r real usr sys <"$tm"
    local ds or rs ar
    read -r ds or rs ar < <(parse_perfdhcp <"$rep")
    STEP_DROP=$(kb_fmt '%.3f' "($ds>0) ? 100*(1-$ar/$ds) : 100")
    STEP_LPS=$(kb_fmt '%.1f' "$ar/$per")
    STEP_CPU=$(kb_fmt '%.0f' "100*($t1-$t0)/$CLK_TCK/$per")
    STEP_OK=$(kb_fmt '%d' "($ds>0 && $STEP_DROP < $MAXDROP) ? 1 : 0")
    local gen=
    [ "$(kb_fmt '%d' "($ds < 0.97*$rate*$per) ? 1 : 0")" = 1 ] && gen=" GEN-LIMITED(sent $(kb_fmt '%.0f' "$ds/$per")/s)"
    printf 'run  %-8s rate=%-6s period=%ss DISC=%s OFFER=%s REQ=%s ACK=%s drop=%s%% leases/s=%s srv_cpu=%s%% srv_peak_rss=%sMiB perfdhcp_cpu=%s%% rcvbuf_drops(srv/perfdhcp)=%s/%s %s%s\n' \
        "$name" "$rate" "$per" "$ds" "$or" "$rs" "$ar" "$STEP_DROP" "$STEP_LPS" "$STEP_CPU" "$STEP_RSS" \
        "$(kb_fmt '%.0f' "100*($usr+$sys)/$real")" "$((s1 - s0))" "$((c1 - c0))" "$([ "$STEP_OK" = 1 ] && echo PASS || echo FAIL)" "$gen"
}
run_step() {
    local t
    for ((t = 1; t <= TRIES; t++)); do
        run_step_once "$1" "$2" || return 1
        [ "$STEP_OK" = 1 ] && return 0
    done
    return 0
}

echo "# bench-dhcp $(date -u +%Y-%m-%dT%H:%MZ): $(perfdhcp -v 2>&1 | head -1), kea $(kea-dhcp4 -V 2>/dev/null | head -1), $(dnsmasq --version | head -1 | cut -d' ' -f1-3), kiln ${KILN:+$("$KILN" version 2>/dev/null | head -1)}"
echo "# $(kb_load); pin=$PIN nice=$NICE rates=$RATES period=${PERIOD}s clients=$CLIENTS maxdrop=$MAXDROP% subnet=$SUBNET pool=$POOL_SIZE workdir=$WORK"

IFS=, read -r -a NAMES <<<"$SERVERS"
IFS=, read -r -a RATE_LIST <<<"$RATES"
declare -A BEST_RATE BEST_LPS BEST_CPU
for name in "${NAMES[@]}"; do
    best=0 best_lps=0 best_cpu=- fail=0 broken=0
    for rate in "${RATE_LIST[@]}"; do
        run_step "$name" "$rate" || { broken=1; break; }
        if [ "$STEP_OK" = 1 ]; then best=$rate best_lps=$STEP_LPS best_cpu=$STEP_CPU
        else fail=$rate; break; fi
    done
    if [ "$broken" = 0 ] && [ "$best" = 0 ] && [ "$fail" != 0 ]; then
        rate=$((fail / 2))
        while [ "$rate" -ge 125 ]; do
            run_step "$name" "$rate" || { broken=1; break; }
            if [ "$STEP_OK" = 1 ]; then best=$rate best_lps=$STEP_LPS best_cpu=$STEP_CPU; break; fi
            fail=$rate rate=$((rate / 2))
        done
    fi
    for ((k = 0; k < BISECT; k++)); do
        [ "$broken" = 0 ] && [ "$best" != 0 ] && [ "$fail" != 0 ] || break
        rate=$(((best + fail) / 2)); rate=$(((rate + 50) / 100 * 100))
        [ "$rate" -gt "$best" ] && [ "$rate" -lt "$fail" ] || break
        run_step "$name" "$rate" || { broken=1; break; }
        if [ "$STEP_OK" = 1 ]; then best=$rate best_lps=$STEP_LPS best_cpu=$STEP_CPU; else fail=$rate; fi
    done
    BEST_RATE[$name]=$best BEST_LPS[$name]=$best_lps BEST_CPU[$name]=$best_cpu
    note=
    [ "$broken" = 1 ] && note=" (ERROR: server did not start/answer)"
    [ "$fail" = 0 ] && [ "$best" != 0 ] && note="$note (no failing rate found: capacity is higher)"
    printf 'SUMMARY dhcp server=%-8s max_ok_rate=%-6s leases_per_s=%-8s srv_cpu=%s%% first_fail=%s%s\n' \
        "$name" "$best" "$best_lps" "$best_cpu" "$([ "$fail" = 0 ] && echo none || echo "$fail")" "$note"
done

# ---- durability: Kiln's leases after kill -9 --------------------------------------
DURA="not run"
if [ "$DURABILITY" = 1 ] && [[ " ${NAMES[*]} " == *" kiln "* ]]; then
    drate=${BEST_RATE[kiln]:-0}; drate=$((drate / 2)); ((drate > 4000)) && drate=4000; ((drate < 500)) && drate=500
    count_leases() { kiln_cli "$1" get leases -o name 2>/dev/null | wc -l; }
    count_bound() { kiln_cli "$1" get leases 2>/dev/null | awk 'NR > 1 && $4 == "bound"' | wc -l; }
    st="$WORK/state/kiln-kill"; rm -rf "$st"; mkdir -p "$st"
    # (a) kill -9 right after the run
    ok_a=0 ok_b=0
    if kiln_up "$st" "$WORK/logs/kill-a.server.txt" && wait_ready; then
        l0=$(count_leases "$st/kiln"); b0=$(count_bound "$st/kiln")
        perfdhcp_run -r "$drate" -R 4000000000 -p 4 -W 3000000 >"$WORK/logs/kill-a.perfdhcp.txt"
        read -r _ _ _ acks < <(parse_perfdhcp <"$WORK/logs/kill-a.perfdhcp.txt")
        kb_stop "$SRV_PG" 0
        kiln_up "$st" "$WORK/logs/kill-a.restart.txt"
        l1=$(count_leases "$st/kiln"); b1=$(count_bound "$st/kiln")
        [ "$((b1 - b0))" -ge "$acks" ] && [ "$acks" -gt 0 ] && ok_a=1
        echo "kill-9 (a) right after a 4 s ${drate}/s run: ACKs=$acks; after restart: new Lease objects $((l1 - l0)) (kiln get leases -o name | wc -l: $l0 -> $l1), new bound leases $((b1 - b0)) ($((b1 - b0 - acks)) committed but their ACK not counted by perfdhcp) $([ $ok_a = 1 ] && echo '>= ACKs: PASS' || echo '< ACKs: FAIL')"
        kb_stop "$SRV_PG" 3
    else
        echo "kill-9 (a): ERROR: kiln did not start"
    fi
    # (b) kill -9 in the middle of a run
    st="$WORK/state/kiln-kill-b"; rm -rf "$st"; mkdir -p "$st"
    if kiln_up "$st" "$WORK/logs/kill-b.server.txt" && wait_ready; then
        b0=$(count_bound "$st/kiln")
        ip netns exec "$NS_CLI" "${CLI_PIN[@]}" perfdhcp -4 -l "$CLI_IF" -g single -r "$drate" \
            -R 4000000000 -p 6 -W 500000 >"$WORK/logs/kill-b.perfdhcp.txt" 2>&1 &
        pp=$!
        sleep 3
        kb_stop "$SRV_PG" 0
        wait "$pp" || true
        read -r _ _ _ acks < <(parse_perfdhcp <"$WORK/logs/kill-b.perfdhcp.txt")
        kiln_up "$st" "$WORK/logs/kill-b.restart.txt"
        b1=$(count_bound "$st/kiln"); l1=$(count_leases "$st/kiln")
        [ "$((b1 - b0))" -ge "$acks" ] && [ "$acks" -gt 0 ] && ok_b=1
        echo "kill-9 (b) 3 s into a ${drate}/s run: ACKs=$acks bound leases after restart=$((b1 - b0)) (all $l1) $([ $ok_b = 1 ] && echo '>= ACKs: PASS' || echo ': FAIL')"
        kb_stop "$SRV_PG" 3
    else
        echo "kill-9 (b): ERROR: kiln did not start"
    fi
    DURA=$([ $ok_a = 1 ] && [ $ok_b = 1 ] && echo PASS || echo FAIL)
fi

# ---- summary table -----------------------------------------------------------------
echo
echo "# DHCPv4 DORA, highest offered rate with < $MAXDROP% drops (perfdhcp, $(kb_load))"
printf '| %-8s | %-12s | %-10s | %-8s |\n' server max_ok_rate leases/s srv_cpu
printf '|%s|%s|%s|%s|\n' ---------- -------------- ------------ ----------
for name in "${NAMES[@]}"; do
    printf '| %-8s | %-12s | %-10s | %-8s |\n' "$name" "${BEST_RATE[$name]}" "${BEST_LPS[$name]}" "${BEST_CPU[$name]}%"
done
if [[ -n ${BEST_LPS[kiln]:-} ]]; then
    for peer in kea dnsmasq; do
        [[ -n ${BEST_LPS[$peer]:-} ]] && echo "ratio kiln/$peer leases/s: $(kb_ratio "${BEST_LPS[kiln]}" "${BEST_LPS[$peer]}")"
    done
    echo "kiln leases survive kill -9: $DURA"
fi
