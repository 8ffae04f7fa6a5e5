// Package flood measures what a flood from one address costs a real `kiln serve`:
// database growth per 10,000 unauthenticated requests, and the boot scripts per
// second that other addresses still get meanwhile (scripts/bench-flood.sh, `make
// bench-flood`). Its tests run only when KILN_FLOOD=1: they take a minute and
// report figures for BENCHMARKS.md.
package flood
