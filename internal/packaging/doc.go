// Package packaging holds the tests of how Kiln is installed: the Debian package
// that deploy/debian/build-deb.sh (make deb) builds, installed into a scratch root,
// and its systemd unit checked by systemd-analyze. It has no code of its own.
package packaging
