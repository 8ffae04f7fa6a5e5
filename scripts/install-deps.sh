#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when they are missing.
# Needs root; without root it only reports what is missing.
set -euo pipefail
pkgs=(
  postgresql          # the PostgreSQL store's tests start a throwaway server
  tftp-hpa atftp curl # real TFTP clients the TFTP server is tested against
  openssl             # openssl req makes and checks CSRs with attributes (enrollment)
  ca-certificates bc  # bc: the benchmark scripts
  isc-dhcp-client busybox-static kea-admin tcpdump iproute2 # real DHCP clients (dhclient, udhcpc, perfdhcp)
  fdisk gdisk e2fsprogs  # sfdisk/sgdisk check GPT layouts, mkfs.ext4/debugfs for write-file
  openipmi ipmitool  # ipmi_sim as a BMC, ipmitool as the IPMI client
  ignition cloud-init  # ignition-validate and cloud-init schema check rendered configs
  qemu-system-x86 ipxe-qemu ipxe ovmf cpio dnsmasq-base kmod  # netboot end-to-end tests
  prometheus  # promtool checks deploy/prometheus/alerts.yaml (internal/observability)
  systemd  # systemd-analyze verify/security, sysusers and tmpfiles offline (the .deb test); no systemd runs
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (run as root to install): ${missing[*]}" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
