#!/usr/bin/env bash
# bench-flood.sh - what a flood from one address costs a real kiln serve on
# loopback (no root needed; bounded: about a minute and a half):
#   1. database growth per N requests (default 10,000) to each of GET /ipxe (a
#      known machine), junk POST /enroll and GET /phone-home from 127.0.0.9:
#      events, audit entries and objects added, bytes of kiln.db + WAL;
#   2. scripts/s that 250 legitimate clients (127.0.1.1 ... 127.0.1.250, each its
#      own machine, 4 requests/s each) get for D seconds alone, then while
#      127.0.0.9 floods /ipxe (HTTP) and junk POST /enroll (HTTPS; 16 connections)
#      and sends TFTP read requests;
#   3. enrollments/s that A legitimate agents at a time (the agent's own enrollment
#      code over HTTPS, one join token; each enrollment a new machine from its own
#      address, 127.0.2.1 and up) get for D seconds (at most E enrollments) alone,
#      then during the same flood.
# KILN=path/to/kiln measures that binary (e.g. one built from an older commit)
# instead of one built from this tree.
#
# Options: -n N (requests per endpoint, default 10000), -d SEC (default 10),
#          -c CLIENTS (legitimate script clients, at most 250; default 250),
#          -a AGENTS (concurrent legitimate agents, default 16),
#          -e E (enrollments per phase at most, default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=10000 DUR=10 CLIENTS=250 AGENTS=16 ENROLLS=20000
while getopts 'n:d:c:a:e:h' opt; do
    case $opt in
        n) N=$OPTARG ;; d) DUR=$OPTARG ;; c) CLIENTS=$OPTARG ;;
        a) AGENTS=$OPTARG ;; e) ENROLLS=$OPTARG ;;
        h) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done
export KILN_FLOOD=1 KILN_FLOOD_N=$N KILN_FLOOD_SECONDS=$DUR KILN_FLOOD_CLIENTS=$CLIENTS \
    KILN_FLOOD_AGENTS=$AGENTS KILN_FLOOD_ENROLLS=$ENROLLS
[ -n "${KILN:-}" ] && export KILN_TEST_BIN=$KILN KILN_FLOOD_REPORT_ONLY=1
go test -count=1 -v -timeout 10m -run 'TestFloodGrowth|TestFloodBench' ./test/flood/ | grep -E '_test\.go:[0-9]+:|^(ok|FAIL|---)'
