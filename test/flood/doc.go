// Package flood measures what a flood from one address costs a real `kiln serve`:
// database growth per 10,000 unauthenticated requests, and the boot scripts and
// enrollments per second that other addresses still get meanwhile, against the
// same figures without the flood (scripts/bench-flood.sh, `make bench-flood`). Its
// tests run only when KILN_FLOOD=1: they take about a minute and a half and report
// figures for BENCHMARKS.md.
package flood
