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
  swtpm swtpm-tools tpm2-tools  # a real TPM 2.0 emulator for the VMs (attestation); tpm2-tools only in tests
  sbsigntool systemd-boot-efi binutils dosfstools mtools  # UKI assembly (objcopy) and Secure Boot signing (sbverify checks it), ESP images
  cryptsetup-bin minisign  # veritysetup for dm-verity images; minisign signs artifacts in tests
  chromium  # the web console's browser tests (chromedp)
  skopeo umoci  # check the OCI image
)
# Debian 13's iPXE (HTTPS, ECDHE, arm64 EFI), pinned, extracted under .cache/ipxe
# with dpkg -x: never installed over Debian 12's ipxe package, which stays the
# fallback (kiln serve --ipxe-dir .cache/ipxe/usr/lib/ipxe --ipxe-dir /usr/lib/ipxe).
ipxe_version=1.21.1+git20250501.dad20602+dfsg-1
ipxe_sha256=eeaca79dbde0fb86c102bf1d362c6f6a67ed0ddab38b3dd12e1b332339f5dd99
fetch_trixie_ipxe() {
  local root dest mirror deb tmp
  root=$(cd "$(dirname "$0")/.." && pwd)
  dest=$root/.cache/ipxe
  [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$ipxe_version" ] && return 0
  # The mirror this machine already uses (deb822 "URIs:" or a one-line "deb" entry).
  mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1)
  mirror=${mirror%/}
  mirror=${mirror:-http://deb.debian.org/debian}
  deb="ipxe_${ipxe_version}_all.deb"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  if ! curl -fsSL --retry 3 -o "$tmp/$deb" "$mirror/pool/main/i/ipxe/${deb//+/%2B}"; then
    echo "install-deps: cannot fetch $deb from $mirror" >&2
    return 1
  fi
  if ! echo "$ipxe_sha256  $tmp/$deb" | sha256sum -c --quiet -; then
    echo "install-deps: $deb: sha256 mismatch, not used" >&2
    return 1
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg -x "$tmp/$deb" "$dest"
  echo "$ipxe_version" >"$dest/.version"
  echo "install-deps: Debian 13 iPXE $ipxe_version in $dest/usr/lib/ipxe"
}
if ! fetch_trixie_ipxe && [ "${CI:-}" = "true" ]; then
  exit 1
fi

# Helm is not in Debian 12: the chart's test (internal/packaging TestHelmChart) uses
# helm built from the Go module proxy, pinned, into .cache/bin; once, then cached.
# It is not a dependency of Kiln's go.mod.
helm_version=v4.3.2
install_helm() {
  local root bin
  root=$(cd "$(dirname "$0")/.." && pwd)
  bin=$root/.cache/bin/helm
  # go install stamps no patch version into helm (it reports v4.3): a file records it.
  if [ -x "$bin" ] && [ "$(cat "$bin.version" 2>/dev/null)" = "$helm_version" ]; then
    return 0
  fi
  if ! command -v go >/dev/null; then
    echo "install-deps: go not found, cannot build helm $helm_version" >&2
    return 1
  fi
  echo "install-deps: building helm $helm_version into $root/.cache/bin (once; a few minutes on two cores)"
  GOBIN=$root/.cache/bin go install "helm.sh/helm/v4/cmd/helm@$helm_version" &&
    echo "$helm_version" >"$bin.version"
}
if ! install_helm && [ "${CI:-}" = "true" ]; then
  exit 1
fi

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
