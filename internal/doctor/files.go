package doctor

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// IPXEFiles are the iPXE binaries Kiln serves over TFTP: BIOS, UEFI with its own
// drivers, UEFI on the firmware's network stack.
var IPXEFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// ipxeVersion finds the version string iPXE builds carry ("iPXE 1.21.1+...").
var ipxeVersion = regexp.MustCompile(`iPXE (\d+\.\d+\.\d+[+~.0-9A-Za-z()-]*)`)

// CheckIPXE reports, for each binary, whether it is in dir, its version and
// whether it can fetch over HTTPS (needed for https boot and the by-cert chain).
// HTTPS support is read from the binary's strings: builds with
// DOWNLOAD_PROTO_HTTPS carry the "https" URI scheme; a compressed binary may hide
// it, so "not found" is a warning, not a failure.
func CheckIPXE(dir string) []Finding {
	if !ensureDir(dir) {
		return []Finding{{Check: "ipxe", Status: Fail, Detail: dir + " is not a directory",
			Fix: "apt install ipxe, or point --ipxe-dir at a directory of iPXE builds"}}
	}
	var out []Finding
	for _, name := range IPXEFiles {
		f := Finding{Check: "ipxe " + name}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Status, f.Detail = Warn, fmt.Sprintf("missing from %s", dir)
			f.Fix = "apt install ipxe (Debian ships ipxe.efi and undionly.kpxe), or build it: machines of that firmware type cannot chain-load iPXE"
			out = append(out, f)
			continue
		}
		version := "version unknown"
		if m := ipxeVersion.FindSubmatch(b); m != nil {
			version = "iPXE " + string(m[1])
		}
		if bytes.Contains(b, []byte("https")) {
			f.Detail = version + ", HTTPS-capable"
		} else {
			f.Status, f.Detail = Warn, version+", no sign of HTTPS support"
			f.Fix = "machines booting it cannot fetch https:// URLs; build iPXE with DOWNLOAD_PROTO_HTTPS (config/general.h)"
		}
		out = append(out, f)
	}
	return out
}

// CheckKEKFile reports whether the key-encryption key is readable by its owner
// only: anyone who reads it can unseal every secret and the CA key.
func CheckKEKFile(path string) Finding {
	f := Finding{Check: "kek file"}
	fi, err := os.Stat(path)
	switch {
	case os.IsNotExist(err):
		f.Status, f.Detail = Warn, path+" does not exist yet (kiln serve creates it at first start)"
		f.Fix = "none before the first start; afterwards back it up: without it the secrets and the CA key are lost"
	case err != nil:
		f.Status, f.Detail, f.Fix = Fail, fmt.Sprintf("%s: %v", path, err), "make the file readable by the user kiln serve runs as"
	case !fi.Mode().IsRegular():
		f.Status, f.Detail, f.Fix = Fail, path+" is not a regular file", "point --kek-file at the 64-hex-digit key file"
	case fi.Mode().Perm()&0o077 != 0:
		f.Status, f.Detail = Fail, fmt.Sprintf("%s has mode %04o: group or others can read the key", path, fi.Mode().Perm())
		f.Fix = "chmod 0600 " + path
	default:
		f.Detail = fmt.Sprintf("%s, mode %04o", path, fi.Mode().Perm())
	}
	return f
}

// CheckCertificate reports when the PEM certificate in path expires: a failure
// once expired, a warning within warnWithin of it.
func CheckCertificate(what, path string, now time.Time, warnWithin time.Duration) Finding {
	f := Finding{Check: what + " certificate"}
	b, err := os.ReadFile(path)
	if err != nil {
		f.Status, f.Detail, f.Fix = Warn, fmt.Sprintf("cannot read %s: %v", path, err), "run on the server host with --data-dir, after kiln serve's first start"
		return f
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		f.Status, f.Detail, f.Fix = Fail, path+" holds no PEM certificate", "restore it from a backup of the data dir"
		return f
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		f.Status, f.Detail, f.Fix = Fail, fmt.Sprintf("%s: %v", path, err), "restore it from a backup of the data dir"
		return f
	}
	left := cert.NotAfter.Sub(now)
	f.Detail = fmt.Sprintf("expires %s (in %s)", cert.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour))
	switch {
	case left <= 0:
		f.Status, f.Detail = Fail, fmt.Sprintf("expired %s", cert.NotAfter.UTC().Format(time.RFC3339))
		f.Fix = "agents can no longer enroll or renew: import a new CA (--ca-import-cert/--ca-import-key) and re-enroll"
	case left < warnWithin:
		f.Status = Warn
		f.Fix = "plan the CA's replacement before it expires: agents cannot renew past it"
	}
	return f
}
