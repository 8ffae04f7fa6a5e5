#!/usr/bin/env bash
# bench-http.sh - requests/s of Kiln's per-machine iPXE script (GET /ipxe?mac=...)
# at 100 and at 100,000 machines, and of nginx serving a static 400-byte file, in
# the same run and under the same conditions (wrk -t1 -c64, 10 s, keep-alive).
#
# Everything runs in a private network namespace kbhttp-<pid> (its own loopback):
#   kiln   kiln serve --listen 127.0.0.1:8080 (embedded SQLite store), with a profile
#          that boots a kernel and an initrd (two Artifacts) and N machines that use
#          it, loaded with `kiln apply` in applies of 10,000. Each request looks the
#          machine up by MAC, reads its profile and both artifacts, renders the
#          kernel command line template and records a BootScript event on the
#          machine's timeline. A wrk Lua script walks the MACs of all N machines
#          (a stride through them, so consecutive requests hit different machines).
#   nginx  nginx 1 worker, a 400-byte static file, access_log off, sendfile on,
#          keepalive_requests 100000 (the peer: serving a file from memory is the
#          least work an HTTP server can do for a request)
# Server on CPU 1, wrk on CPU 0 (-c split), both at nice -10 (-n). Each case:
# `wrk -t1 -c64 -d10s --latency` -> requests/s, p50/p99 latency, server CPU %.
#
# wrk is one source address, where a fleet's machines each have their own: Kiln's
# per-source script limit (--rate-limit) is switched off, or it would be measured.
#
# Each server is measured over plain HTTP and over HTTPS (Kiln's HTTPS listener with
# its ECDSA P-256 server certificate; nginx with an ECDSA P-256 certificate made
# here, TLS 1.3 both), with keep-alive and with a new connection per request
# (`Connection: close`: a full TLS handshake per script, as iPXE fetches it).
#
# Output: "run ..." lines and a table with the ratios kiln/nginx, HTTPS/HTTP and
# 100,000 machines / 100 machines (1.0 = flat).
#
# Requirements (installed when missing, as root): nginx-light, wrk, curl,
# iproute2, util-linux. KILN=path/to/kiln (default bin/kiln, built when missing).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  -m LIST   machine counts, ascending (default: 100,100000)
  -d SEC    wrk duration (default: 10)
  -C N      wrk connections (default: 64)
  -c MODE   split | same | none (default: split)
  -n NICE   niceness of servers and wrk (default: -10)
  -s LIST   servers (default: kiln,nginx)
  -w DIR    work dir (default: mktemp -d /tmp/bench-http.XXXXXX); kept
  -h        help
EOF
}

COUNTS=100,100000 DUR=10 CONNS=64 PIN=split NICE=-10 SERVERS=kiln,nginx WORK=
while getopts 'm:d:C:c:n:s:w:h' opt; do
    case $opt in
        m) COUNTS=$OPTARG ;; d) DUR=$OPTARG ;; C) CONNS=$OPTARG ;; c) PIN=$OPTARG ;; n) NICE=$OPTARG ;;
        s) SERVERS=$OPTARG ;; w) WORK=$OPTARG ;; h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
    esac
done

kb_need_root
kb_install wrk:wrk nginx:nginx-light curl:curl ip:iproute2 taskset:util-linux setsid:util-linux openssl:openssl
[[ $SERVERS == *kiln* ]] && kb_kiln
case $PIN in
    split) SRV_PIN=(taskset -c 1) CLI_PIN=(taskset -c 0) ;;
    same) SRV_PIN=(taskset -c 0) CLI_PIN=(taskset -c 0) ;;
    none) SRV_PIN=() CLI_PIN=() ;;
    *) kb_die "-c must be split, same or none" ;;
esac
SRV_PIN=(nice -n "$NICE" "${SRV_PIN[@]}") CLI_PIN=(nice -n "$NICE" "${CLI_PIN[@]}")

WORK=${WORK:-$(mktemp -d /tmp/bench-http.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/docroot"
chmod 755 "$WORK" "$WORK/docroot"   # nginx workers run as www-data
NS=kbhttp-$$
cleanup() { kb_cleanup; rm -rf "$WORK/state"; kb_log "work dir (logs): $WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
kb_netns_add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
URL=http://127.0.0.1:8080
TLSURL=https://127.0.0.1:8443
# bench_modes NAME PG PATHURL-SUFFIX... : keep-alive and new-connection runs over
# HTTP and HTTPS; results in RES[NAME,http|https|http-close|https-close].
bench_modes() {
    local name=$1 pg=$2; shift 2
    local mode base
    for mode in http https http-close https-close; do
        case $mode in http*) base=$URL ;; esac
        case $mode in https*) base=$TLSURL ;; esac
        case $mode in *-close) HDR="Connection: close" ;; *) HDR= ;; esac
        if [ $# -ge 2 ]; then bench "$name $mode" "$pg" "$base" "$1" "$2"
        else bench "$name $mode" "$pg" "$base$1"; fi
        RES[$name,$mode]="$RPS $P50 $P99 $CPU"
    done
    HDR=
}

# wrk's request generator: machine k has MAC 02:00:k>>24:k>>16:k>>8:k (hex bytes).
cat >"$WORK/macs.lua" <<'EOF'
local n, i = 1, 0
function init(args) n = tonumber(args[1]) end
function request()
  i = i + 1
  local k = (i * 7919) % n
  return wrk.format("GET", string.format("/ipxe?mac=02-00-%02x-%02x-%02x-%02x&buildarch=x86_64&platform=efi",
    math.floor(k / 16777216) % 256, math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256))
end
EOF

to_ms() { awk -v v="$1" 'BEGIN { u=v; sub(/[0-9.]+/, "", u); n=v+0;
    if (u=="us") n/=1000; else if (u=="s") n*=1000; printf "%.2f", n }'; }
CLK_TCK=$(getconf CLK_TCK)
# bench NAME SRV_PG URL [LUA ARG] -> RPS P50 P99 CPU (globals), prints a run line.
# HDR (a global, may be empty) is an extra request header, e.g. "Connection: close".
HDR=
bench() {
    local name=$1 pg=$2 url=$3 rep="$WORK/logs/${1// /_}.wrk.txt" t0 t1 extra=()
    [ $# -ge 5 ] && extra=(-s "$4" "$url" -- "$5")
    [ ${#extra[@]} -eq 0 ] && extra=("$url")
    [ -n "$HDR" ] && extra=(-H "$HDR" "${extra[@]}")
    t0=$(kb_pg_ticks "$pg")
    kb_run timeout -k 2 "$((DUR + 30))" ip netns exec "$NS" "${CLI_PIN[@]}" \
        wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "${extra[@]}" >"$rep" 2>&1 || true
    t1=$(kb_pg_ticks "$pg")
    RPS=$(awk '/^Requests\/sec:/ {print $2}' "$rep"); RPS=${RPS:-0}
    P50=$(to_ms "$(awk '$1=="50%" {print $2}' "$rep")"); P99=$(to_ms "$(awk '$1=="99%" {print $2}' "$rep")")
    CPU=$(kb_fmt '%.0f' "100*($t1-$t0)/$CLK_TCK/$DUR")
    local errs; errs=$(grep -E 'Socket errors|Non-2xx' "$rep" | tr -s ' ' | tr '\n' ';' || true)
    printf 'run  %-22s req/s=%s p50=%sms p99=%sms srv_cpu=%s%% %s\n' "$name" "$RPS" "$P50" "$P99" "$CPU" "${errs:+ERRORS: $errs}"
}

# machines FROM TO -> a manifest of machines FROM..TO-1 on $WORK/chunk.yaml
machines() {
    awk -v s="$1" -v e="$2" 'BEGIN {
      for (i = s; i < e; i++) {
        printf "---\nkind: Machine\nmetadata:\n  name: node-%06d\n  labels: {rack: r%d}\n", i, i % 40
        printf "spec:\n  profile: bench-install\n  interfaces:\n    - mac: \"02:00:%02x:%02x:%02x:%02x\"\n      ip: 10.%d.%d.%d\n", \
          int(i/16777216)%256, int(i/65536)%256, int(i/256)%256, i%256, 100 + int(i/65536)%100, int(i/256)%256, i%256
      }
    }' >"$WORK/chunk.yaml"
}

echo "# bench-http $(date -u +%Y-%m-%dT%H:%MZ): ${KILN:+$("$KILN" version 2>/dev/null | head -1), }$(nginx -v 2>&1 | head -1), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
echo "# $(kb_load); pin=$PIN nice=$NICE wrk -t1 -c$CONNS -d${DUR}s machines=$COUNTS workdir=$WORK"
declare -A RES
IFS=, read -r -a COUNT_LIST <<<"$COUNTS"

if [[ $SERVERS == *kiln* ]]; then
    st="$WORK/state/kiln"; mkdir -p "$st"
    kb_start "$WORK/logs/kiln.server.txt" ip netns exec "$NS" "${SRV_PIN[@]}" "$KILN" serve --data-dir "$st" \
        --listen 127.0.0.1:8080 --https-listen 127.0.0.1:8443 --server-san 127.0.0.1 --tftp-listen= \
        --log-level warn --max-body-bytes 67108864 --rate-limit scripts=off
    KPG=$KB_LAST_PID
    for ((i = 0; i < 200; i++)); do
        kb_alive "$KPG" || kb_die "kiln serve exited (see $WORK/logs/kiln.server.txt)"
        in_ns curl -fsS -m 1 "$URL/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    kcli() { in_ns "${CLI_PIN[@]}" "$KILN" --data-dir "$st" "$@"; }
    cat >"$WORK/profile.yaml" <<'EOF'
kind: Artifact
metadata: {name: bench-kernel}
spec: {source: "https://example.org/bench/vmlinuz", arch: x86_64}
---
kind: Artifact
metadata: {name: bench-initrd}
spec: {source: "https://example.org/bench/initrd.img", arch: x86_64}
---
kind: Profile
metadata: {name: bench-install}
spec:
  description: benchmark profile
  boot:
    kernel: bench-kernel
    initrds: [bench-initrd]
    cmdline: "console=ttyS0 hostname={{ .Machine.Name }} ip={{ .Machine.IP }} role={{ index .Machine.Labels \"rack\" }}"
EOF
    kcli apply -f "$WORK/profile.yaml" >/dev/null
    loaded=0
    for n in "${COUNT_LIST[@]}"; do
        t0=$(date +%s.%N)
        for ((s = loaded; s < n; s += 10000)); do
            e=$((s + 10000)); ((e > n)) && e=$n
            machines "$s" "$e"
            kcli apply -f "$WORK/chunk.yaml" >/dev/null
        done
        t1=$(date +%s.%N)
        echo "run  kiln: loaded machines $loaded..$((n - 1)) in $(kb_fmt '%.1f' "$t1 - $t0") s"
        loaded=$n
        k=$((n - 1))
        probe=$(in_ns curl -fsS "$URL/ipxe?mac=$(printf '02-00-%02x-%02x-%02x-%02x' $((k >> 24 & 255)) $((k >> 16 & 255)) $((k >> 8 & 255)) $((k & 255)))&buildarch=x86_64&platform=efi" || true)
        grep -q "^kernel .*bench-kernel.*hostname=node-$(printf %06d "$k")" <<<"$probe" ||
            kb_die "unexpected script for machine $k: $probe"
        bench_modes "kiln$n" "$KPG" "$WORK/macs.lua" "$n"
        RES[kiln,$n]=${RES[kiln$n,http]}
    done
    evs=$(kcli describe machine node-000000 2>/dev/null | grep -c BootScript || true)
    echo "run  kiln: node-000000's timeline shows $evs BootScript events (describe lists the newest)"
    grep -E 'VmHWM' "/proc/$KPG/status" | sed 's/^/run  kiln: /'
    kb_stop "$KPG" 5
fi

if [[ $SERVERS == *nginx* ]]; then
    st="$WORK/state/nginx"; mkdir -p "$st"
    head -c 400 /dev/zero | tr '\0' 'x' >"$WORK/docroot/small.html"
    chmod 644 "$WORK/docroot/small.html"
    cat >"$st/nginx.conf" <<EOF
worker_processes 1;
pid $st/nginx.pid;
error_log $st/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 100000; keepalive_timeout 65;
    types { text/html html; }
    client_body_temp_path $st/body; proxy_temp_path $st/proxy;
    fastcgi_temp_path $st/fastcgi; uwsgi_temp_path $st/uwsgi; scgi_temp_path $st/scgi;
    server { listen 127.0.0.1:8080 backlog=4096; root $WORK/docroot; }
    server {
        listen 127.0.0.1:8443 ssl backlog=4096; root $WORK/docroot;
        ssl_certificate $st/tls.crt; ssl_certificate_key $st/tls.key;
        ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    }
}
EOF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$st/tls.key" -out "$st/tls.crt" >/dev/null 2>&1
    kb_start "$WORK/logs/nginx.server.txt" ip netns exec "$NS" "${SRV_PIN[@]}" \
        nginx -p "$st/" -c "$st/nginx.conf" -e "$st/error.log" -g 'daemon off;'
    NPG=$KB_LAST_PID
    for ((i = 0; i < 100; i++)); do
        [ "$(in_ns curl -s -m 1 -o /dev/null -w '%{size_download}' "$URL/small.html" 2>/dev/null)" = 400 ] && break
        sleep 0.1
    done
    bench_modes nginx "$NPG" /small.html
    RES[nginx]=${RES[nginx,http]}
    kb_stop "$NPG" 3
fi

echo
echo "# HTTP, wrk -t1 -c$CONNS -d${DUR}s ($(kb_load))"
printf '| %-34s | %-9s | %-8s | %-8s | %-8s | %-11s |\n' case "req/s" "p50 ms" "p99 ms" "srv cpu" "vs nginx"
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------------------------ ----------- ---------- ---------- ---------- -------------
row() {
    local r=($2)
    printf '| %-34s | %-9s | %-8s | %-8s | %-8s | %-11s |\n' "$1" "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}%" \
        "$(kb_ratio "${r[0]}" "$(cut -d' ' -f1 <<<"${RES[nginx]:-0}")")"
}
for n in "${COUNT_LIST[@]}"; do [[ -n ${RES[kiln,$n]:-} ]] && row "kiln /ipxe script, $n machines" "${RES[kiln,$n]}"; done
[[ -n ${RES[nginx]:-} ]] && row "nginx static 400 B" "${RES[nginx]}"
echo
echo "# HTTPS vs HTTP: keep-alive, and a new connection per request (a TLS handshake each)"
printf '| %-30s | %-9s | %-8s | %-8s | %-8s | %-11s | %-11s |\n' case "req/s" "p50 ms" "p99 ms" "srv cpu" "vs nginx" "vs own HTTP"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' -------------------------------- ----------- ---------- ---------- ---------- ------------- -------------
trow() {
    local who=$1 mode=$2 label=$3 r own peer
    [[ -n ${RES[$who,$mode]:-} ]] || return 0
    r=(${RES[$who,$mode]})
    own=$(cut -d' ' -f1 <<<"${RES[$who,${mode/https/http}]:-0}")
    peer=$(cut -d' ' -f1 <<<"${RES[nginx,$mode]:-0}")
    printf '| %-30s | %-9s | %-8s | %-8s | %-8s | %-11s | %-11s |\n' "$label" "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}%" \
        "$(kb_ratio "${r[0]}" "$peer")" "$(kb_ratio "${r[0]}" "$own")"
}
for n in "${COUNT_LIST[@]}"; do
    for mode in http https http-close https-close; do trow "kiln$n" $mode "kiln script $n, $mode"; done
done
for mode in http https http-close https-close; do trow nginx $mode "nginx 400 B, $mode"; done
if [ ${#COUNT_LIST[@]} -ge 2 ] && [[ -n ${RES[kiln,${COUNT_LIST[0]}]:-} ]]; then
    first=${COUNT_LIST[0]} last=${COUNT_LIST[-1]}
    echo "kiln flatness, req/s at $last / at $first machines: $(kb_ratio "$(cut -d' ' -f1 <<<"${RES[kiln,$last]}")" "$(cut -d' ' -f1 <<<"${RES[kiln,$first]}")")"
fi
