#!/usr/bin/env bash
# The main job, end to end on the embedded store: a QEMU VM (SeaBIOS + iPXE) powers on
# in a network namespace, gets its address and boot script from `kiln serve` (DHCP,
# HTTP), boots the kernel and initramfs Kiln serves, and phones home. Then the
# machine's timeline, its lease and the audit chain are shown. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/e2e-assets.sh >/dev/null
out=$(mktemp /tmp/kiln-demo.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "Booting a VM from Kiln in a network namespace (QEMU without KVM: 10-30 s) ..."
KILN_DEMO=$out go test -count=1 -run '^TestNetbootBIOSKilnDHCP$' ./test/e2e/
cat "$out"
echo
echo "demo done: the VM got its address from Kiln's DHCP, its boot script and kernel over HTTP, and phoned home"
