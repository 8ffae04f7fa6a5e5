#!/usr/bin/env bash
# bench-tftp.sh - seconds to fetch a 1 MiB file over TFTP from Kiln and from
# tftpd-hpa, in the same run and under the same conditions.
#
# Both servers run, one after the other, in a private network namespace
# kbtftp-<pid> that has only its loopback, on 127.0.0.1:6969:
#   kiln       kiln serve --tftp-listen 127.0.0.1:6969 --ipxe-dir DIR (DIR holds the
#              1 MiB file as undionly.kpxe, one of the names Kiln serves)
#   tftpd-hpa  in.tftpd -L -s DIR -a :6969 (foreground; ":6969" is the wildcard of
#              the private namespace: in.tftpd cannot resolve 127.0.0.1 there)
# Clients, N transfers each (default 10), the median and the minimum are printed:
#   atftp     default options (512-byte blocks, lock-step)
#   atftp     --option "blksize 1468"
#   atftp     --option "blksize 1468" --option "windowsize 16" (RFC 7440; a server
#             that does not acknowledge windowsize answers it lock-step; the OACK
#             each server sends is printed)
#   tftp-hpa  default options (`tftp -m binary ... -c get`)
# Every transfer's size is checked, the last one compared byte for byte. Loopback
# RTT is ~0.03 ms, so the figures are per-packet processing costs (server and
# client), not what a LAN client sees (lock-step TFTP pays one RTT per block).
# Server on CPU 1, client on CPU 0 (-c split), both at nice -10 (-n).
#
# Output: "run ..." lines and a table: median seconds per transfer, the ratio
# kiln/tftpd-hpa (< 1: Kiln is faster) and the speed-up tftpd-hpa/kiln.
#
# Requirements (installed when missing, as root): tftpd-hpa, tftp-hpa, atftp,
# iproute2, util-linux. KILN=path/to/kiln (default bin/kiln, built when missing).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  -n N      transfers per mode and client (default: 10)
  -s BYTES  file size (default: 1048576)
  -c MODE   split | same | none (default: split)
  -N NICE   niceness of servers and clients (default: -10)
  -w DIR    work dir (default: mktemp -d /tmp/bench-tftp.XXXXXX); kept
  -h        help
EOF
}

NREP=10 SIZE=1048576 PIN=split NICE=-10 WORK=
while getopts 'n:s:c:N:w:h' opt; do
    case $opt in
        n) NREP=$OPTARG ;; s) SIZE=$OPTARG ;; c) PIN=$OPTARG ;; N) NICE=$OPTARG ;; w) WORK=$OPTARG ;;
        h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
    esac
done

kb_need_root
kb_install in.tftpd:tftpd-hpa tftp:tftp-hpa atftp:atftp curl:curl ip:iproute2 taskset:util-linux setsid:util-linux
kb_kiln
case $PIN in
    split) SRV_PIN=(taskset -c 1) CLI_PIN=(taskset -c 0) ;;
    same) SRV_PIN=(taskset -c 0) CLI_PIN=(taskset -c 0) ;;
    none) SRV_PIN=() CLI_PIN=() ;;
    *) kb_die "-c must be split, same or none" ;;
esac
SRV_PIN=(nice -n "$NICE" "${SRV_PIN[@]}") CLI_PIN=(nice -n "$NICE" "${CLI_PIN[@]}")

WORK=${WORK:-$(mktemp -d /tmp/bench-tftp.XXXXXX)}
ROOT=$WORK/root
mkdir -p "$WORK/logs" "$WORK/out" "$ROOT"
chmod 755 "$WORK" "$ROOT"   # in.tftpd serves as nobody
NS=kbtftp-$$
cleanup() { kb_cleanup; rm -rf "$WORK/out" "$WORK/state"; kb_log "work dir (logs): $WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

FILE=undionly.kpxe
head -c "$SIZE" /dev/urandom >"$ROOT/$FILE"
chmod 644 "$ROOT/$FILE"
kb_netns_add "$NS"

# The client side: one process per series (namespace entry is not timed);
# prints "rc size seconds" per transfer.
cat >"$WORK/client.sh" <<'EOF'
#!/bin/bash
client=$1 n=$2 out=$3; shift 3
for ((i = 0; i < n; i++)); do
    rm -f "$out/f"
    t0=$EPOCHREALTIME
    if [ "$client" = atftp ]; then
        timeout 60 atftp "$@" -g -r undionly.kpxe -l "$out/f" 127.0.0.1 6969 >/dev/null 2>&1; rc=$?
    else
        timeout 60 tftp -m binary 127.0.0.1 6969 -c get undionly.kpxe "$out/f" >/dev/null 2>&1; rc=$?
    fi
    t1=$EPOCHREALTIME
    echo "$rc $(stat -c %s "$out/f" 2>/dev/null || echo 0) $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')"
done
EOF
chmod 755 "$WORK/client.sh"
client() { kb_run timeout -k 2 600 ip netns exec "$NS" "${CLI_PIN[@]}" "$WORK/client.sh" "$@"; }

SRV_PG=
start_server() {  # NAME LOG
    local st="$WORK/state/$1"
    rm -rf "$st"; mkdir -p "$st"
    case $1 in
        kiln)
            kb_start "$2" ip netns exec "$NS" "${SRV_PIN[@]}" "$KILN" serve --data-dir "$st" \
                --listen 127.0.0.1:8080 --tftp-listen 127.0.0.1:6969 --ipxe-dir "$ROOT" --log-level warn ;;
        tftpd-hpa)
            kb_start "$2" ip netns exec "$NS" "${SRV_PIN[@]}" in.tftpd -L -s "$ROOT" -a :6969 ;;
    esac
    SRV_PG=$KB_LAST_PID
    local i r
    for ((i = 0; i < 100; i++)); do
        kb_alive "$SRV_PG" || return 1
        r=$(client atftp 1 "$WORK/out" --tftp-timeout 1 2>/dev/null || true)
        [ "$(awk '{print $1, $2}' <<<"$r")" = "0 $SIZE" ] && return 0
        sleep 0.2
    done
    return 1
}

MODES=("atftp default" "atftp blksize=1468" "atftp blksize=1468,windowsize=16" "tftp-hpa default")
mode_args() {
    case $1 in
        "atftp default"|"tftp-hpa default") ;;
        "atftp blksize=1468") printf '%s\n' --option "blksize 1468" ;;
        "atftp blksize=1468,windowsize=16") printf '%s\n' --option "blksize 1468" --option "windowsize 16" ;;
    esac
}

echo "# bench-tftp $(date -u +%Y-%m-%dT%H:%MZ): $("$KILN" version 2>/dev/null | head -1), $(in.tftpd -V 2>&1 | head -1), $(atftp -V 2>&1 | head -1)"
echo "# $(kb_load); pin=$PIN nice=$NICE file=$SIZE bytes transfers=$NREP per mode; workdir=$WORK"
declare -A MED MIN
CLK_TCK=$(getconf CLK_TCK)
for srv in kiln tftpd-hpa; do
    log="$WORK/logs/$srv.server.txt"
    if ! start_server "$srv" "$log"; then
        echo "run  $srv ERROR: $FILE not served on 127.0.0.1:6969 (see $log)"; tail -n 5 "$log" | sed 's/^/    | /'
        kb_stop "$SRV_PG" 3; continue
    fi
    oack=$(ip netns exec "$NS" timeout 30 atftp --trace --option "blksize 1468" --option "windowsize 16" \
        -g -r "$FILE" -l "$WORK/out/oack" 127.0.0.1 6969 2>&1 | grep -m1 -E 'received (OACK|1\. DATA)' |
        sed -e 's/^received //' -e 's/, update.*//' || true)
    echo "run  $srv first reply to RRQ(blksize 1468, windowsize 16): ${oack:-none}"
    t0=$(kb_pg_ticks "$SRV_PG")
    for m in "${MODES[@]}"; do
        mapfile -t args < <(mode_args "$m")
        res=$(client "${m%% *}" "$NREP" "$WORK/out" "${args[@]}" 2>/dev/null || true)
        ok=$(awk -v s="$SIZE" '$1 == 0 && $2 == s {n++} END {print n+0}' <<<"$res")
        same=$(cmp -s "$WORK/out/f" "$ROOT/$FILE" && echo identical || echo DIFFERENT)
        MED[$srv,$m]=$(awk '{print $3}' <<<"$res" | kb_median)
        MIN[$srv,$m]=$(awk '{print $3}' <<<"$res" | sort -g | head -1)
        [ "$ok" = "$NREP" ] || MED[$srv,$m]="${MED[$srv,$m]}(FAILED:$ok/$NREP)"
        printf 'run  %-9s %-34s %d/%d ok, last file %s; s/transfer median=%s min=%s (all: %s)\n' "$srv" "$m" "$ok" "$NREP" \
            "$same" "${MED[$srv,$m]}" "${MIN[$srv,$m]}" "$(awk '{printf "%s ", $3}' <<<"$res")"
    done
    t1=$(kb_pg_ticks "$SRV_PG")
    echo "run  $srv server CPU over all transfers: $(kb_fmt '%.2f' "($t1-$t0)/$CLK_TCK") s (forked children of in.tftpd are not counted)"
    kb_stop "$SRV_PG" 3
done

echo
echo "# TFTP, $SIZE-byte file, median seconds per transfer of $NREP ($(kb_load))"
printf '| %-34s | %-10s | %-10s | %-16s | %-20s |\n' "client, options" kiln tftpd-hpa "kiln/tftpd-hpa" "speed-up (hpa/kiln)"
printf '|%s|%s|%s|%s|%s|\n' ------------------------------------ ------------ ------------ ------------------ ----------------------
for m in "${MODES[@]}"; do
    k=${MED[kiln,$m]:-n/a} h=${MED[tftpd-hpa,$m]:-n/a}
    printf '| %-34s | %-10s | %-10s | %-16s | %-20s |\n' "$m" "$k" "$h" "$(kb_ratio "$k" "$h")" "$(kb_ratio "$h" "$k")"
done
