#!/usr/bin/env bash
# The main job, end to end on the embedded store (needs root):
#
#   scripts/demo.sh           install: a QEMU VM (SeaBIOS + iPXE) in a network namespace
#                             netboots Kiln's agent environment, enrolls, runs its
#                             machine's workflow (partition a data disk, stream a disk
#                             image with sha256 check, write a per-machine file into it,
#                             reboot), then boots the installed disk and phones home
#                             with that file's content (TestInstallToDiskAndBoot)
#   scripts/demo.sh netboot   the netboot only: DHCP, boot script, kernel and initramfs
#                             from Kiln, phone-home (TestNetbootBIOSKilnDHCP)
#   scripts/demo.sh examples  the example fleet (examples/) with these assets: web-1
#                             netboots the agent, its template installs the disk image
#                             and writes its hostname; it ends provisioned and boots
#                             the disk (TestExamplesInstallWeb1)
#
# Then the machine as Kiln sees it (its workflow and timeline), its lease and the
# audit chain are shown.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-install}
case "$mode" in
  install)
    test=TestInstallToDiskAndBoot
    intro="Installing a VM with Kiln in a network namespace (QEMU without KVM: 30 s to a few minutes): netboot the agent, run the workflow, reboot into the disk ..."
    outro="demo done: the VM netbooted Kiln's agent, which enrolled, partitioned, streamed and verified the image, wrote the machine's file and rebooted; it then booted from its disk and phoned home with that file's content" ;;
  netboot)
    test=TestNetbootBIOSKilnDHCP
    intro="Booting a VM from Kiln in a network namespace (QEMU without KVM: 10-30 s) ..."
    outro="demo done: the VM got its address from Kiln's DHCP, its boot script and kernel over HTTP, and phoned home" ;;
  examples)
    test=TestExamplesInstallWeb1
    intro="Applying examples/ with make demo's assets and installing its machine web-1 in a VM (QEMU without KVM: 30 s to a few minutes) ..."
    outro="demo done: examples/ applied unchanged (plus the agent's artifacts, the image's sha256 and the lab's subnet); web-1 netbooted the agent, which wrote the disk image and its hostname; web-1 is provisioned and booted its disk" ;;
  *) echo "usage: $0 [install|netboot|examples]" >&2; exit 2 ;;
esac
./scripts/e2e-assets.sh >/dev/null
out=$(mktemp /tmp/kiln-demo.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "$intro"
KILN_DEMO=$out go test -count=1 -timeout 15m -run "^$test\$" ./test/e2e/
cat "$out"
echo
echo "$outro"
