#!/usr/bin/env bash
# bench-flood.sh - what a flood from one address costs a real kiln serve on
# loopback (no root needed; bounded: about a minute):
#   1. database growth per N requests (default 10,000) to each of GET /ipxe (a
#      known machine), junk POST /enroll and GET /phone-home from 127.0.0.1:
#      events, audit entries and objects added, bytes of kiln.db + WAL;
#   2. scripts/s that 250 legitimate clients (127.0.0.2 ... 127.0.0.251, each its
#      own machine, 4 requests/s each) get for D seconds alone, then while
#      127.0.0.1 floods /ipxe and /enroll (16 connections) and TFTP read requests.
# KILN=path/to/kiln measures that binary (e.g. one built from an older commit)
# instead of one built from this tree.
#
# Options: -n N (requests per endpoint, default 10000), -d SEC (default 10),
#          -c CLIENTS (legitimate clients, at most 250; default 250)
set -euo pipefail
cd "$(dirname "$0")/.."
N=10000 DUR=10 CLIENTS=250
while getopts 'n:d:c:h' opt; do
    case $opt in
        n) N=$OPTARG ;; d) DUR=$OPTARG ;; c) CLIENTS=$OPTARG ;;
        h) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done
export KILN_FLOOD=1 KILN_FLOOD_N=$N KILN_FLOOD_SECONDS=$DUR KILN_FLOOD_CLIENTS=$CLIENTS
[ -n "${KILN:-}" ] && export KILN_TEST_BIN=$KILN KILN_FLOOD_REPORT_ONLY=1
go test -count=1 -v -timeout 10m -run 'TestFloodGrowth|TestFloodBench' ./test/flood/ | grep -E 'RESULT|status codes|^(ok|FAIL|---)'
