#!/usr/bin/env bash
# Benchmarks image2disk against the shell pipelines it replaces, in the same run:
# a SIZE MiB disk image (default 1024) written to a loop device, served by a local
# HTTP server (Go's file server, sendfile), raw and zstd-compressed:
#   raw:  curl | dd                    vs  kiln agent action image2disk (sha256 checked)
#   zstd: curl | zstd -d | dd          vs  kiln agent action image2disk
# Every writer ends with fsync (dd conv=fsync); page caches are dropped before each
# run; the cases alternate, so load from elsewhere hits them alike. Prints, over
# RUNS runs (default 5), the best and the median wall time, the median CPU time
# (user + system of every process of the case: independent of other load), the
# ratios agent/pipe (goal >= 0.9) and the agent's peak RSS.
#
#   sudo scripts/bench-image2disk.sh [SIZE_MIB] [RUNS]
#
# Needs root (loop device), curl, zstd, GNU time; KILN=path/to/kiln (static, with
# `kiln agent action`; default: built here into a temporary directory). The loop
# device's backing file is in BENCH_DIR (default /dev/shm when memory allows, so the
# figures are the pipelines' and not the host disk's writeback, which varies 2x from
# run to run on a VM; BENCH_DIR=/var/tmp measures with the disk).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
runs=${2:-5}
die() { echo "bench-image2disk: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (losetup)"
for t in curl zstd losetup /usr/bin/time; do command -v "$t" >/dev/null || die "$t missing (apt-get install curl zstd mount time)"; done

avail_mib=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
bench_dir=${BENCH_DIR:-}
if [ -z "$bench_dir" ]; then
  bench_dir=/var/tmp
  [ "$avail_mib" -gt $((size * 4 + 2048)) ] && [ -d /dev/shm ] && bench_dir=/dev/shm
fi
work=$(mktemp -d "$bench_dir/kiln-bench.XXXXXX")
loop=
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

kiln=${KILN:-}
if [ -z "$kiln" ]; then
  kiln=$work/kiln
  CGO_ENABLED=0 go build -trimpath -o "$kiln" ./cmd/kiln
fi
"$kiln" agent action --help >/dev/null 2>&1 || die "$kiln has no 'agent action' command (is newAgentCmd wired into internal/cli/root.go?)"

# A helper: a deterministic, compressible image (runs of random bytes and zeros,
# like a filesystem image) and a file server.
mkdir -p "$work/helper" "$work/www"
cat >"$work/helper/main.go" <<'EOF'
package main

import (
	"bufio"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
)

func main() {
	switch os.Args[1] {
	case "gen":
		mib, _ := strconv.Atoi(os.Args[2])
		f, _ := os.Create(os.Args[3])
		w := bufio.NewWriterSize(f, 4<<20)
		r := rand.New(rand.NewPCG(1, 2))
		blk := make([]byte, 64<<10)
		zero := make([]byte, 64<<10)
		for i := 0; i < mib*16; i++ {
			if i%3 == 0 {
				w.Write(zero)
				continue
			}
			for j := 0; j < len(blk); j += 8 {
				v := r.Uint64()
				for k := 0; k < 8; k++ {
					blk[j+k] = byte(v >> (8 * k))
				}
			}
			w.Write(blk)
		}
		w.Flush()
		f.Close()
	case "serve":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		os.WriteFile(os.Args[3], []byte(ln.Addr().String()), 0o644)
		http.Serve(ln, http.FileServer(http.Dir(os.Args[2])))
	}
}
EOF
(cd "$work/helper" && go mod init benchhelper >/dev/null 2>&1 && go build -o helper .)
echo "generating a $size MiB image..."
"$work/helper/helper" gen "$size" "$work/www/img.raw"
zstd -q -T0 -3 "$work/www/img.raw" -o "$work/www/img.zst"
sha_raw=$(sha256sum "$work/www/img.raw" | cut -d' ' -f1)
sha_zst=$(sha256sum "$work/www/img.zst" | cut -d' ' -f1)
"$work/helper/helper" serve "$work/www" "$work/addr" &
server=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
url=http://$(cat "$work/addr")

truncate -s $(((size + 64) << 20)) "$work/disk"
loop=$(losetup --find --show "$work/disk")
echo "image: $size MiB raw, $(($(stat -c %s "$work/www/img.zst") >> 20)) MiB zstd; disk $loop on $bench_dir; server $url"

# run CMD: one timed run after dropping caches; prints wall seconds, CPU seconds
# (user + system, children included), peak RSS KiB of the largest process.
run() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  # The programs themselves come back into the cache: in the agent environment the
  # kiln binary is in RAM, and curl's libraries would be on a host.
  cat "${warm[@]}" >/dev/null
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" bash -c "$1" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; die "run failed: $1"; }
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$work/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
best() { sort -n | head -n1; }

warm=("$kiln" "$(command -v curl)" "$(command -v zstd)" "$(command -v dd)")
for lib in $(ldd "$(command -v curl)" "$(command -v zstd)" 2>/dev/null | awk '$3 ~ /^\// {print $3}' | sort -u); do warm+=("$lib"); done

declare -A secs bestsecs cpu rss
cases=(pipe-raw agent-raw pipe-zstd agent-zstd)
declare -A cmd=(
  [pipe-raw]="curl -sf $url/img.raw | dd of=$loop bs=4M iflag=fullblock conv=fsync status=none"
  [agent-raw]="'$kiln' agent action image2disk disk=$loop imageURL=$url/img.raw sha256=$sha_raw --log-level warn"
  [pipe-zstd]="curl -sf $url/img.zst | zstd -dc | dd of=$loop bs=4M iflag=fullblock conv=fsync status=none"
  [agent-zstd]="'$kiln' agent action image2disk disk=$loop imageURL=$url/img.zst sha256=$sha_zst --log-level warn"
)
for c in "${cases[@]}"; do : >"$work/$c.wall"; : >"$work/$c.cpu"; done
for i in $(seq "$runs"); do
  for c in "${cases[@]}"; do
    read -r s u m < <(run "${cmd[$c]}")
    echo "$s" >>"$work/$c.wall"
    echo "$u" >>"$work/$c.cpu"
    rss[$c]=$m
    echo "run $i $c: ${s}s wall, ${u}s CPU"
  done
done
echo
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf "%-11s %9s %9s %11s %9s %9s\n" case "best s" "median s" "best MiB/s" "CPU s" "peak RSS"
for c in "${cases[@]}"; do
  secs[$c]=$(median <"$work/$c.wall")
  bestsecs[$c]=$(best <"$work/$c.wall")
  cpu[$c]=$(median <"$work/$c.cpu")
  printf "%-11s %9s %9s %11.0f %9s %5d MiB\n" "$c" "${bestsecs[$c]}" "${secs[$c]}" "$(echo "$size / ${bestsecs[$c]}" | bc -l)" "${cpu[$c]}" "$((rss[$c] / 1024))"
done
echo
for k in raw zstd; do
  printf "agent/pipe throughput, %-4s: best %.2f, median %.2f (goal >= 0.9); CPU agent/pipe %.2f\n" "$k" \
    "$(echo "${bestsecs[pipe-$k]} / ${bestsecs[agent-$k]}" | bc -l)" "$(echo "${secs[pipe-$k]} / ${secs[agent-$k]}" | bc -l)" \
    "$(echo "${cpu[agent-$k]} / ${cpu[pipe-$k]}" | bc -l)"
done
echo "(the agent also computes and checks the sha256 of the download; the pipes check nothing)"
