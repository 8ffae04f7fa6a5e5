#!/usr/bin/env bash
# Prepares what the end-to-end netboot tests (test/e2e) boot, in DIR (default
# .cache/e2e under the repository):
#   DIR/vmlinuz             Debian's kernel, taken from its package (not installed)
#   DIR/phone-home.cpio.gz  a busybox initramfs that loads the NIC driver, gets an
#                           address by DHCP, calls <kiln.url>/phone-home?mac=... and
#                           powers off
#   DIR/kernel.version      the kernel package's name, so a re-run skips the download
# and installs the Debian packages the tests run (QEMU, iPXE, OVMF, dnsmasq, ...)
# when they are missing. Idempotent: a second run downloads nothing and rebuilds the
# initramfs byte for byte.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$repo/.cache/e2e}
log() { echo "e2e-assets: $*"; }
die() { echo "e2e-assets: error: $*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------
pkgs=(qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static cpio dnsmasq-base iproute2 kmod xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_updated=
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}; run as root to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt_updated=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "packages present: ${pkgs[*]}"
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# --- kernel ------------------------------------------------------------------------
# The exact package linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64.
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
want=$(kernel_pkg || true)
if [ -z "$want" ] && [ -z "$apt_updated" ] && [ "$(id -u)" -eq 0 ]; then
  log "apt-cache does not know linux-image-amd64; running apt-get update"
  apt-get update -qq
  want=$(kernel_pkg || true)
fi
have=$(cat "$dir/kernel.version" 2>/dev/null || true)
if [ -z "$want" ]; then
  [ -n "$have" ] || die "cannot resolve linux-image-amd64 with apt-cache depends, and no kernel is cached in $dir"
  log "apt-cache cannot resolve linux-image-amd64; keeping the cached $have"
  want=$have
fi

if [ "$have" = "$want" ] && [ -s "$dir/vmlinuz" ] && [ -d "$dir/modules" ]; then
  log "kernel $want already in $dir"
else
  log "fetching $want"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt-get download writes to the current directory; _apt cannot write to a mktemp
  # dir (0700), which only costs a warning about an unsandboxed download.
  (cd "$work" && apt-get download -q "$want" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$work"/"$want"_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "apt-get download $want produced no .deb"
  dpkg -x "$deb" "$work/root"
  vmlinuz=$(ls "$work"/root/boot/vmlinuz-* | head -n1)
  [ -n "$vmlinuz" ] || die "$deb has no /boot/vmlinuz-*"
  kver=${vmlinuz##*/vmlinuz-}
  rm -rf "$dir/modules.new"
  mkdir -p "$dir/modules.new"
  # Debian's kernel builds the NIC drivers as modules; the initramfs carries these.
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net e1000; do
    f=$(find "$work/root/lib/modules/$kver" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
    [ -n "$f" ] || die "module $m not found in $deb"
    # busybox insmod loads plain ELF only: decompress here.
    case "$f" in
      *.ko.xz) xz -dc "$f" >"$dir/modules.new/$m.ko" ;;
      *.ko.zst) command -v zstd >/dev/null || die "$f is zstd-compressed and zstd is missing"
                zstd -qdc "$f" >"$dir/modules.new/$m.ko" ;;
      *) cp "$f" "$dir/modules.new/$m.ko" ;;
    esac
  done
  rm -rf "$dir/modules"
  mv "$dir/modules.new" "$dir/modules"
  cp "$vmlinuz" "$dir/vmlinuz.new" && mv "$dir/vmlinuz.new" "$dir/vmlinuz"
  echo "$want" >"$dir/kernel.version"
  rm -rf "$work"
  trap - EXIT
  log "kernel $kver: $dir/vmlinuz ($(stat -c %s "$dir/vmlinuz") bytes), modules in $dir/modules"
fi

# --- initramfs -----------------------------------------------------------------------
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing (package busybox-static)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,etc,tmp,lib/modules,run}
cp "$busybox" "$root/bin/busybox"
cp "$dir"/modules/*.ko "$root/lib/modules/"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# Kiln e2e phone-home initramfs: NIC driver, DHCP, one HTTP call, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "kiln-e2e: $*" >/dev/console; }
finish() { say "$1"; sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }

# Dependency order: Debian's kernel has these as modules and there is no modprobe here.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net e1000; do
  insmod /lib/modules/$m.ko 2>/dev/null || say "insmod $m failed"
done

url=
for w in $(cat /proc/cmdline); do
  case "$w" in kiln.url=*) url=${w#kiln.url=} ;; esac
done
[ -n "$url" ] || finish "no kiln.url= on the kernel command line"

ifc=
i=0
while [ -z "$ifc" ] && [ $i -lt 100 ]; do
  for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] || [ ! -e /sys/class/net/$n/device ] || { ifc=$n; break; }
  done
  [ -n "$ifc" ] || { sleep 0.1; i=$((i+1)); }
done
[ -n "$ifc" ] || finish "no network interface appeared"
mac=$(cat /sys/class/net/$ifc/address)
ip link set lo up
ip link set "$ifc" up
say "interface $ifc mac $mac; DHCP"
udhcpc -i "$ifc" -s /etc/udhcpc.script -n -q -f -t 20 -T 1 -A 1 >/dev/console 2>&1 ||
  finish "DHCP failed on $ifc"
addr=$(cat /run/dhcp-ip 2>/dev/null)
msg="initrd+up+on+$ifc+$addr+kernel+$(uname -r)"
hyp=$(echo "$mac" | tr ':' '-')
n=0
# Not wget -T: Debian's static busybox 1.35 wget segfaults with it; timeout instead.
until out=$(timeout 10 wget -q -O- "$url/phone-home?mac=$hyp&msg=$msg" 2>&1); do
  n=$((n+1))
  [ $n -lt 5 ] || finish "phone-home to $url failed: $out"
  sleep 1
done
finish "phoned home to $url as $mac ($addr): $out"
EOF

cat >"$root/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc calls this with deconfig|bound|renew|nak; $ip, $mask (prefix length), $router.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "$ip" >/run/dhcp-ip
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done ;;
esac
exit 0
EOF
chmod 0755 "$root/init" "$root/etc/udhcpc.script" "$root/bin/busybox"

# Reproducible: fixed mtimes, sorted names, no gzip timestamp.
find "$root" -exec touch -h -d @0 {} +
out=$dir/phone-home.cpio.gz
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -9) >"$out.new"
mv "$out.new" "$out"
rm -rf "$root"
trap - EXIT
log "initramfs: $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -c1-16)...)"
log "done: $dir"
