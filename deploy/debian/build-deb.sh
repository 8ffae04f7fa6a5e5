#!/usr/bin/env bash
# Builds kiln_<version>_<arch>.deb from a built kiln binary with dpkg-deb alone:
# a staged tree with DEBIAN/{control,conffiles,postinst,prerm,postrm}. No
# debhelper or source package: the binary is a static Go build (make build), so
# the package only places files, and dpkg-deb --root-owner-group makes every
# file root:root without fakeroot.
#
#   deploy/debian/build-deb.sh BIN VERSION OUTDIR [GOARCH]
#
# VERSION is Kiln's (git describe: v1.2.3, v1.2.3-4-gabc, v0.0.0-<commit>); the
# Debian version drops the v and turns '-' into '+' (1.2.3+4+gabc), which sorts
# after 1.2.3 as the commit does.
set -euo pipefail
bin=${1:?usage: build-deb.sh BIN VERSION OUTDIR [GOARCH]}
version=${2:?version}
out=${3:?output directory}
arch=${4:-$(go env GOARCH)}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

debversion=${version#v}
debversion=${debversion//-/+}
[[ $debversion =~ ^[0-9] ]] || debversion="0.0.0+$debversion"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/kiln
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/kiln" \
	"$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" \
	"$root/usr/share/man/man1" "$root/usr/share/doc/kiln" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d"

install -m 0755 "$bin" "$root/usr/bin/kiln"
install -m 0644 "$here/kiln.service" "$root/usr/lib/systemd/system/kiln.service"
install -m 0644 "$here/kiln.sysusers" "$root/usr/lib/sysusers.d/kiln.conf"
install -m 0644 "$here/kiln.tmpfiles" "$root/usr/lib/tmpfiles.d/kiln.conf"
install -m 0644 "$repo/LICENSE" "$root/usr/share/doc/kiln/copyright"

# Man pages and the commented default config come from the command tree.
(cd "$repo" && go run ./tools/packagedocs -man "$stage/man" -config "$root/etc/kiln/kiln.yaml" -version "$version")
chmod 0644 "$root/etc/kiln/kiln.yaml"
for p in "$stage"/man/*.1; do
	gzip -9n <"$p" >"$root/usr/share/man/man1/$(basename "$p").gz"
done
chmod 0644 "$root"/usr/share/man/man1/*.gz

# Shell completions, from cobra's generators in the binary itself.
"$bin" completion bash >"$root/usr/share/bash-completion/completions/kiln"
"$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_kiln"
"$bin" completion fish >"$root/usr/share/fish/vendor_completions.d/kiln.fish"
chmod 0644 "$root/usr/share/bash-completion/completions/kiln" \
	"$root/usr/share/zsh/vendor-completions/_kiln" "$root/usr/share/fish/vendor_completions.d/kiln.fish"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: kiln
Version: $debversion
Architecture: $arch
Maintainer: Kiln developers <kiln@kilnhq.dev>
Section: admin
Priority: optional
Installed-Size: $size
Depends: systemd (>= 247)
Recommends: ipxe
Homepage: https://github.com/kilnhq/kiln
Description: network-boot and server-provisioning server
 Kiln answers DHCP, TFTP and iPXE/HTTP boot, keeps an inventory behind a REST
 API and CLI, enrolls machines with its own CA and mTLS, holds secrets and
 drives BMC power. One static binary: kiln serve is the server, the other kiln
 commands its client.
CONTROL
echo /etc/kiln/kiln.yaml >"$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

mkdir -p "$out"
deb=$out/kiln_${debversion}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
