# shellcheck shell=bash
# bench-lib.sh - helpers of the peer benchmarks bench-dhcp.sh, bench-tftp.sh and
# bench-http.sh (sourced, not run).
#
# Every server is started in its own session (setsid) and its process-group id is
# recorded, so that cleanup signals exactly the processes the script started (by
# id, never by name). Network namespaces the script creates are recorded too and
# deleted on exit.

KB_PGIDS=()   # process groups started here (pid == pgid thanks to setsid)
KB_NETNS=()   # network namespaces created here
KB_FG=        # the load generator running now (interruptible, see kb_run)
KB_CLEANED=0
exec {KB_ERR}>&2
kb_log() { printf '%s\n' "$*" >&"$KB_ERR"; }
kb_die() { kb_log "$(basename "$0"): $*"; exit 1; }
kb_need_root() { [ "$(id -u)" = 0 ] || kb_die "needs root (network namespaces, ports 67/69)"; }

# kb_install CMD:PACKAGE... installs the Debian packages of missing commands.
# apt must not start services: when no policy-rc.d forbids it, one is put in
# place for the duration of the install (and removed after).
kb_install() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    kb_need_root
    kb_log "installing ${missing[*]} (apt-get, services not started)"
    local prc=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$prc" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod 755 "$prc"; ours=1
    fi
    local rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
    [ "$ours" = 1 ] && rm -f "$prc"
    [ "$rc" = 0 ] || kb_die "apt-get install ${missing[*]} failed"
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || kb_die "${pair%%:*} still missing after installing ${pair#*:}"
    done
}

# kb_kiln: the kiln binary ($KILN, else bin/kiln, built if missing).
kb_kiln() {
    KILN=${KILN:-$PWD/bin/kiln}
    if [ ! -x "$KILN" ]; then
        kb_log "building $KILN"
        CGO_ENABLED=0 go build -trimpath -o "$KILN" ./cmd/kiln || kb_die "go build failed"
    fi
}

# kb_start LOG CMD... starts CMD in a new session; KB_LAST_PID is its pid and
# process-group id. Call it directly (not in $(...)), so that the group is recorded.
KB_LAST_PID=
kb_start() {
    local log=$1; shift
    setsid "$@" >"$log" 2>&1 </dev/null &
    KB_LAST_PID=$!
    KB_PGIDS+=("$KB_LAST_PID")
    local i line rest
    for ((i = 0; i < 200; i++)); do   # until the child is its own group leader
        { read -r line <"/proc/$KB_LAST_PID/stat"; } 2>/dev/null || break
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        [ "$3" = "$KB_LAST_PID" ] && break
        sleep 0.01
    done
}

# kb_pg_scan PGID -> "<live members> <cpu ticks of the group, reaped children included>"
kb_pg_scan() {
    local pg=$1 f line rest live=0 sum=0
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        [ "${3:-}" = "$pg" ] || continue
        [ "$1" = Z ] || live=$((live + 1))
        sum=$((sum + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$live $sum"
}
kb_pg_ticks() { local s; s=$(kb_pg_scan "$1"); echo "${s##* }"; }
# kb_pg_hwm_mib PGID -> the peak resident set (VmHWM) of the group's largest live
# process, in MiB
kb_pg_hwm_mib() {
    local pg=$1 d line rest kb max=0
    for d in /proc/[0-9]*; do
        { read -r line <"$d/stat"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        [ "${3:-}" = "$pg" ] || continue
        kb=$(awk '/^VmHWM:/ {print $2}' "$d/status" 2>/dev/null)
        [ -n "$kb" ] && [ "$kb" -gt "$max" ] && max=$kb
    done
    echo $((max / 1024))
}
kb_alive() {
    kill -0 -- "-$1" 2>/dev/null || return 1
    local s; s=$(kb_pg_scan "$1"); [ "${s%% *}" -gt 0 ]
}

# kb_stop PGID [GRACE_S]: SIGTERM the group, then SIGKILL after GRACE_S (0: SIGKILL
# at once, like a crash).
kb_stop() {
    local pg=$1 grace=${2:-3} i
    if kb_alive "$pg"; then
        if [ "$grace" -gt 0 ]; then
            kill -TERM -- "-$pg" 2>/dev/null || true
            for ((i = 0; i < grace * 10; i++)); do kb_alive "$pg" || break; sleep 0.1; done
        fi
        kb_alive "$pg" && kill -KILL -- "-$pg" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kb_alive "$pg" || break; sleep 0.1; done
    fi
    wait "$pg" 2>/dev/null || true
    local keep=() p
    for p in "${KB_PGIDS[@]}"; do [ "$p" = "$pg" ] || keep+=("$p"); done
    KB_PGIDS=("${keep[@]}")
}

kb_netns_add() {
    ip netns add "$1" || kb_die "ip netns add $1 failed"
    KB_NETNS+=("$1")
    ip -n "$1" link set lo up
}

# kb_run CMD...: a load generator in its own group, waited for in the background so
# that an INT/TERM trap runs at once (and kb_cleanup kills it).
kb_run() {
    setsid "$@" </dev/null &
    KB_FG=$!
    local rc=0
    wait "$KB_FG" || rc=$?
    KB_FG=
    return "$rc"
}

kb_cleanup() {
    [ "$KB_CLEANED" = 1 ] && return 0
    KB_CLEANED=1
    local pg ns
    if [ -n "$KB_FG" ]; then
        kill -TERM -- "-$KB_FG" 2>/dev/null || true
        sleep 0.3
        kill -KILL -- "-$KB_FG" 2>/dev/null || true
    fi
    for pg in "${KB_PGIDS[@]}"; do kb_stop "$pg" 2; done
    for ns in "${KB_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    KB_NETNS=()
}

# kb_fmt FORMAT EXPR: floating point through awk.
kb_fmt() { awk "BEGIN { printf \"$1\", $2 }" </dev/null; }
# kb_median: median of the numbers on stdin (one a line).
kb_median() { sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
# kb_ratio A B: A/B with 2 decimals, "n/a" when B is 0 or not a number.
kb_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0 || a == "" ) print "n/a"; else printf "%.2f", a/b }'; }
# kb_load: the load average and what else runs, for the record.
kb_load() { echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cpus"; }
