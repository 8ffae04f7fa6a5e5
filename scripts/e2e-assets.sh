#!/usr/bin/env bash
# Prepares what the end-to-end netboot tests (test/e2e) boot, in DIR (default
# .cache/e2e under the repository):
#   DIR/vmlinuz             Debian's kernel, taken from its package (not installed)
#   DIR/phone-home.cpio.gz  a busybox initramfs that loads the NIC driver, gets an
#                           address by DHCP, calls <kiln.url>/phone-home?mac=... and
#                           powers off
#   DIR/kernel.version      the kernel package's name, so a re-run skips the download
#   DIR/modules/            the kernel's NIC, virtio_blk and ext4 modules (with their
#                           dependencies), flat: the phone-home initramfs loads the NIC
#                           drivers, `kiln image build --modules-dir` takes the rest
#   DIR/install/disk.img.zst  a small BIOS-bootable disk image for the install test
#                           (TestInstallToDiskAndBoot): GPT with gptmbr.bin, partition
#                           kiln-boot (FAT, SYSLINUX, the kernel and an initramfs) and
#                           partition kiln-root (ext4, empty /kiln); the booted system
#                           mounts kiln-root, reads what the workflow wrote there
#                           (/kiln/machine-name, /kiln/phone-home-url), phones home with
#                           it and powers off. Its sha256 is in disk.img.zst.sha256.
# and installs the Debian packages the tests run (QEMU, iPXE, OVMF, dnsmasq, SYSLINUX,
# ...) when they are missing. Idempotent and reproducible: a second run downloads
# nothing and rebuilds both initramfs and the disk image byte for byte (fixed
# timestamps, GUIDs and volume IDs; SYSLINUX runs under faketime).
#
# The agent environment (kiln image build) is not built here: the install test builds
# it from the tree under test, so it never boots a stale agent.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$repo/.cache/e2e}
log() { echo "e2e-assets: $*"; }
die() { echo "e2e-assets: error: $*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------
pkgs=(qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static cpio dnsmasq-base iproute2 kmod xz-utils fdisk
  syslinux syslinux-common mtools dosfstools gdisk e2fsprogs faketime zstd)
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

# NIC drivers (the phone-home initramfs and the agent), the disk driver and ext4 with
# its dependencies (the agent's write-file, the installed system's root), in load
# order. crc32c_generic is ext4's and jbd2's soft dependency (crypto-crc32c): nothing
# loads it on demand without modprobe.
nic_modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net e1000"
disk_modules="virtio_blk crc16 mbcache crc32c_generic jbd2 ext4"
# FAT for the ESP the A/B slot scenario's agent writes its boot entries to.
esp_modules="fat vfat nls_cp437 nls_ascii nls_utf8"
modules_present() {
  for m in $nic_modules $disk_modules $esp_modules; do [ -s "$dir/modules/$m.ko" ] || return 1; done
}
if [ "$have" = "$want" ] && [ -s "$dir/vmlinuz" ] && modules_present; then
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
  # Debian's kernel builds these as modules; the initramfs carry them.
  for m in $nic_modules $disk_modules $esp_modules; do
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

# --- phone-home initramfs ------------------------------------------------------------
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing (package busybox-static)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,etc,tmp,lib/modules,run}
cp "$busybox" "$root/bin/busybox"
for m in $nic_modules; do cp "$dir/modules/$m.ko" "$root/lib/modules/"; done

# What both test systems' /init do (sourced from /lib/e2e.sh): mounts, console
# messages, modules without modprobe, the first NIC, DHCP, the phone-home call.
write_e2e_lib() {
cat >"$1/lib/e2e.sh" <<'LIB'
# Kiln e2e test system library; E2E_TAG prefixes the console messages.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "$E2E_TAG: $*" >/dev/console; }
finish() { say "$1"; sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }

# load_modules M...: insmod in the order given (dependencies first; no modprobe).
load_modules() {
  for m in "$@"; do
    insmod /lib/modules/$m.ko 2>/dev/null || say "insmod $m failed"
  done
}

# nic_up: the first interface backed by a device, up; sets ifc and mac.
nic_up() {
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
}

# dhcp: an address on $ifc; sets addr.
dhcp() {
  udhcpc -i "$ifc" -s /etc/udhcpc.script -n -q -f -t 20 -T 1 -A 1 >/dev/console 2>&1 ||
    finish "DHCP failed on $ifc"
  addr=$(cat /run/dhcp-ip 2>/dev/null)
}

# phone_home URL MSG: Kiln's phone-home call, retried; sets out.
phone_home() {
  hyp=$(echo "$mac" | tr ':' '-')
  n=0
  # Not wget -T: Debian's static busybox 1.35 wget segfaults with it; timeout instead.
  until out=$(timeout 10 wget -q -O- "$1/phone-home?mac=$hyp&msg=$2" 2>&1); do
    n=$((n+1))
    [ $n -lt 5 ] || finish "phone-home to $1 failed: $out"
    sleep 1
  done
}
LIB
cat >"$1/etc/udhcpc.script" <<'DHCP'
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
DHCP
}

write_e2e_lib "$root"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# Kiln e2e phone-home initramfs: NIC driver, DHCP, one HTTP call, power off.
E2E_TAG=kiln-e2e
. /lib/e2e.sh

load_modules virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net e1000

url=
for w in $(cat /proc/cmdline); do
  case "$w" in kiln.url=*) url=${w#kiln.url=} ;; esac
done
[ -n "$url" ] || finish "no kiln.url= on the kernel command line"

nic_up
say "interface $ifc mac $mac; DHCP"
dhcp
phone_home "$url" "initrd+up+on+$ifc+$addr+kernel+$(uname -r)"
finish "phoned home to $url as $mac ($addr): $out"
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

# --- installable disk image ------------------------------------------------------------
# What TestInstallToDiskAndBoot's workflow streams onto a VM's disk with image2disk, and
# what SeaBIOS then boots from that disk: a real BIOS boot chain, nothing from the
# network. A 1 MiB gap, then
#   1 kiln-boot  16 MiB  FAT16, "legacy BIOS bootable": SYSLINUX (its boot sector
#                        and ldlinux.sys), syslinux.cfg, vmlinuz, initrd.gz
#   2 kiln-root   8 MiB  ext4 with an empty /kiln: write-file puts per-machine files here
# and gptmbr.bin in the MBR, which boots the partition marked legacy BIOS bootable.
# The disk's initramfs loads virtio_blk and ext4, mounts kiln-root read-only, reads
# /kiln/machine-name and /kiln/phone-home-url, gets an address by DHCP, calls
# <url>/phone-home?mac=...&msg=...machine-name=<content> and powers off.
for t in sgdisk mkfs.fat mcopy syslinux mkfs.ext4 faketime zstd; do
  command -v "$t" >/dev/null || die "$t missing (packages gdisk dosfstools mtools syslinux e2fsprogs faketime zstd)"
done
gptmbr=/usr/lib/syslinux/mbr/gptmbr.bin
[ -s "$gptmbr" ] || die "$gptmbr missing (package syslinux-common)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Every timestamp in the image: 2000-01-01 00:00:00 UTC (FAT cannot store 1970).
epoch=946684800
export TZ=UTC

# The installed system's initramfs.
root=$work/initrd
mkdir -p "$root"/{bin,dev,proc,sys,etc,tmp,mnt,lib/modules,run}
cp "$busybox" "$root/bin/busybox"
for m in $nic_modules $disk_modules; do cp "$dir/modules/$m.ko" "$root/lib/modules/"; done
printf '%s\n' $nic_modules $disk_modules >"$root/etc/modules"
write_e2e_lib "$root"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# Kiln e2e installed system, booted by SYSLINUX from the disk a Kiln workflow wrote:
# mounts its root partition, reads what the workflow wrote there, phones home with
# it, powers off.
E2E_TAG=kiln-e2e-disk
. /lib/e2e.sh
say "booted from the local disk: $(cat /proc/cmdline)"
load_modules $(cat /etc/modules)

# A partition by its GPT name, from the kernel's uevent (no udev, no blkid).
partition() {
  i=0
  while [ $i -lt 50 ]; do
    for u in /sys/class/block/*/uevent; do
      if grep -qx "PARTNAME=$1" "$u"; then sed -n 's/^DEVNAME=//p' "$u"; return 0; fi
    done
    sleep 0.1; i=$((i+1))
  done
  return 1
}
rootdev=$(partition kiln-root) || finish "no partition named kiln-root"
mount -t ext4 -o ro "/dev/$rootdev" /mnt || finish "cannot mount /dev/$rootdev"
[ -s /mnt/kiln/machine-name ] || finish "/kiln/machine-name missing on /dev/$rootdev: provisioning did not write it"
[ -s /mnt/kiln/phone-home-url ] || finish "/kiln/phone-home-url missing on /dev/$rootdev"
# The content goes into a URL query: keep to characters that need no escaping.
name=$(head -n1 /mnt/kiln/machine-name | tr -cd 'A-Za-z0-9._:-')
url=$(head -n1 /mnt/kiln/phone-home-url | tr -d ' \r')
umount /mnt
data=$(partition kiln-data) || data=none
say "/dev/$rootdev has machine-name=$name; data partition: $data"

nic_up
dhcp
boot=none
for w in $(cat /proc/cmdline); do
  case "$w" in BOOT_IMAGE=*) boot=${w#BOOT_IMAGE=} ;; esac
done
phone_home "$url" "booted+from+disk+root=$rootdev+boot_image=$boot+data=$data+machine-name=$name"
finish "phoned home to $url as $mac ($addr): machine-name=$name"
INIT
chmod 0755 "$root/init" "$root/etc/udhcpc.script" "$root/bin/busybox"
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -9) >"$work/initrd.gz"

cat >"$work/syslinux.cfg" <<'CFG'
SERIAL 0 115200
SAY kiln-e2e: SYSLINUX is booting the installed system from the local disk
DEFAULT installed
PROMPT 0
TIMEOUT 0
LABEL installed
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
CFG
cp "$dir/vmlinuz" "$work/vmlinuz"
touch -d @$epoch "$work/syslinux.cfg" "$work/vmlinuz" "$work/initrd.gz"

# kiln-boot: FAT16 with a fixed volume ID and times. SYSLINUX's installer writes
# through mtools, which stamps files with the current time: it runs at a fixed time.
mib=1048576
boot_mib=16
root_mib=8
mkfs.fat -F 16 -n KILN-BOOT -i 4b494c4e --invariant -C "$work/boot.fat" $((boot_mib * 1024)) >/dev/null
mcopy -m -i "$work/boot.fat" "$work/syslinux.cfg" "$work/vmlinuz" "$work/initrd.gz" ::/
faketime -f "2000-01-01 00:00:00" syslinux --install "$work/boot.fat"

# kiln-root: ext4 with a fixed UUID, hash seed and times.
mkdir -p "$work/rootfs/kiln"
cat >"$work/rootfs/kiln/README" <<'README'
Kiln e2e installed system. The provisioning workflow writes machine-name and
phone-home-url into this directory; the system phones home with them at boot.
README
find "$work/rootfs" -exec touch -h -d @$epoch {} +
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -L kiln-root -U 6b696c6e-726f-4f74-8000-000000000002 \
  -E hash_seed=6b696c6e-6861-4873-8000-000000000003,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
  -d "$work/rootfs" "$work/root.ext4" ${root_mib}M >/dev/null
# mkfs.ext4 -d copies each file's ctime, which touch cannot set: set it here.
(cd "$work/rootfs" && find . -mindepth 1 | LC_ALL=C sort | sed "s|^\.\(.*\)|set_inode_field \1 ctime @$epoch|") >"$work/ctime.cmds"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$work/ctime.cmds" "$work/root.ext4" >/dev/null 2>&1 ||
  die "debugfs could not set the ctimes in kiln-root"

# The disk: GPT, the two filesystems at their partitions' offsets, and the MBR boot
# code (the first 440 bytes of LBA 0, before the disk signature and partition records).
img=$work/disk.img
raw=$(((1 + boot_mib + root_mib) * mib + 64 * 1024))
truncate -s $raw "$img"
sgdisk -U 6b696c6e-6469-4b6b-8000-000000000001 \
  -n 1:2048:+${boot_mib}M -t 1:0700 -c 1:kiln-boot -A 1:set:2 -u 1:6b696c6e-626f-4f74-8000-000000000011 \
  -n 2:0:+${root_mib}M -t 2:8300 -c 2:kiln-root -u 2:6b696c6e-726f-4f74-8000-000000000012 \
  "$img" >/dev/null
dd if="$work/boot.fat" of="$img" bs=$mib seek=1 conv=notrunc status=none
dd if="$work/root.ext4" of="$img" bs=$mib seek=$((1 + boot_mib)) conv=notrunc status=none
dd if="$gptmbr" of="$img" bs=440 count=1 conv=notrunc status=none
layout=$(sgdisk -p "$img")
grep -q " kiln-boot$" <<<"$layout" && grep -q " kiln-root$" <<<"$layout" && sgdisk -v "$img" | grep -q "No problems found" ||
  die "the disk image's GPT is not as built: $layout"

mkdir -p "$dir/install"
out=$dir/install/disk.img.zst
zstd -q -T1 -12 -f -o "$out.new" "$img"
mv "$out.new" "$out"
sha=$(sha256sum "$out" | cut -d' ' -f1)
echo "$sha  disk.img.zst" >"$dir/install/disk.img.zst.sha256"
rm -rf "$work"
trap - EXIT
log "disk image: $out ($(stat -c %s "$out") bytes, $raw raw), sha256 $sha"
log "done: $dir"
