// Package e2e holds Kiln's end-to-end netboot tests: a real `kiln serve` inside a
// network namespace, QEMU VMs on a bridge in that namespace (SeaBIOS with iPXE's
// option ROM, or OVMF doing firmware PXE), Debian's kernel and a busybox initramfs
// that phones home to Kiln. A test asserts the machine's timeline as Kiln recorded it
// (boot script, kernel and initrd fetched, phone-home), never QEMU's exit code.
//
// The kernel and initramfs come from scripts/e2e-assets.sh (DIR defaults to
// .cache/e2e; KILN_E2E_ASSETS points elsewhere). The tests need root, /dev/net/tun,
// QEMU, iPXE, OVMF and dnsmasq; without them they skip, except with CI=true, where a
// missing prerequisite fails the test.
//
//	sudo scripts/e2e-assets.sh && sudo go test -count=1 -v ./test/e2e/
package e2e
