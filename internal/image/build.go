// Package image builds the agent environment: a kernel and an initramfs that holds
// busybox, the static kiln binary, the kernel modules machines need, and an init that
// loads them, brings up the boot NIC and runs `kiln agent`. The initramfs is
// reproducible: the same inputs give the same bytes (sorted entries, owner 0:0,
// mtime 0, compressors without timestamps).
package image

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// Paths inside the initramfs that the agent's init relies on: agentwire's, as the
// agent imports nothing of the image builder.
const (
	KilnPath       = agentwire.KilnPath
	BusyboxPath    = agentwire.BusyboxPath
	ModuleListPath = agentwire.ModuleListPath
	DHCPScriptPath = agentwire.DHCPScriptPath
)

// ModulesDir holds the decompressed .ko files.
const ModulesDir = "lib/modules"

// Compression formats of the initramfs (both in Debian's kernel: CONFIG_RD_GZIP,
// CONFIG_RD_ZSTD).
const (
	Gzip = "gzip"
	Zstd = "zstd"
)

// Config is what Build takes.
type Config struct {
	// Kernel is the kernel image (bzImage), copied beside the initramfs.
	Kernel string
	// ModulesDir is the kernel's module tree; empty: FindModulesDir.
	ModulesDir string
	// Modules to include (with their dependencies); nil: DefaultModules.
	Modules []string
	// StrictModules makes a module that is neither present nor built in an error
	// (otherwise it is reported in Result.Missing).
	StrictModules bool
	// Busybox is a static busybox (Debian's busybox-static: /bin/busybox).
	Busybox string
	// Kiln is the static kiln binary (CGO_ENABLED=0).
	Kiln string
	// Compression is Gzip (default) or Zstd.
	Compression string
	// OutDir receives the kernel and the initramfs (and the UKI).
	OutDir string
	// UKI, if set, also assembles OutDir/kiln-agent.efi, a Unified Kernel Image of
	// the same kernel and initramfs, signed for Secure Boot if it names a key.
	UKI *UKIOptions
	// Progress, if set, is called as the build goes (bytes of file content packed).
	Progress func(stage string, done, total int64)
}

// File is one output file.
type File struct {
	Path   string
	SHA256 string
	Size   int64
}

// Result of a build.
type Result struct {
	Kernel        File
	Initrd        File
	UKI           *File // set when Config.UKI is
	KernelVersion string
	Arch          string   // x86_64 or arm64, from the kiln binary
	Modules       []string // in load order
	Builtin       []string // asked for, built into the kernel
	Missing       []string // asked for, not available
	Notes         []string
}

// Build writes OutDir/vmlinuz and OutDir/initramfs.cpio.{gz,zst}.
func Build(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Kernel == "" {
		return nil, errors.New("a kernel is required (--kernel)")
	}
	if cfg.OutDir == "" {
		return nil, errors.New("an output directory is required (--out)")
	}
	if cfg.Compression == "" {
		cfg.Compression = Gzip
	}
	if cfg.Compression != Gzip && cfg.Compression != Zstd {
		return nil, fmt.Errorf("compression %q is not gzip or zstd", cfg.Compression)
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	var signer *SecureBootSigner
	if cfg.UKI != nil {
		var err error
		if signer, err = cfg.UKI.check(); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	tree, err := assemble(cfg, res)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ext := ".cpio.gz"
	if cfg.Compression == Zstd {
		ext = ".cpio.zst"
	}
	total := tree.Size()
	res.Initrd, err = writeAtomic(filepath.Join(cfg.OutDir, "initramfs"+ext), func(w io.Writer) error {
		return WriteInitramfs(w, tree, cfg.Compression, func(done int64) {
			progress("initramfs", done, total)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("write initramfs: %w", err)
	}
	res.Kernel, err = writeAtomic(filepath.Join(cfg.OutDir, "vmlinuz"), func(w io.Writer) error {
		f, err := os.Open(cfg.Kernel)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy kernel: %w", err)
	}
	if cfg.UKI != nil {
		progress("uki", total, total)
		uki, err := buildUKI(ctx, *cfg.UKI, signer, res.Kernel.Path, res.Initrd.Path, res.KernelVersion, filepath.Join(cfg.OutDir, "kiln-agent.efi"))
		if err != nil {
			return nil, fmt.Errorf("build the UKI: %w", err)
		}
		res.UKI = &uki
	}
	progress("done", total, total)
	return res, nil
}

// assemble gathers the initramfs content.
func assemble(cfg Config, res *Result) (*Tree, error) {
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.Kiln == "" {
		return nil, errors.New("the kiln binary is required (--kiln-binary)")
	}
	if _, err := staticELF(cfg.Busybox); err != nil {
		return nil, fmt.Errorf("busybox %s: %w (install Debian's busybox-static)", cfg.Busybox, err)
	}
	arch, err := staticELF(cfg.Kiln)
	if err != nil {
		return nil, fmt.Errorf("kiln binary %s: %w (build it with CGO_ENABLED=0: make build)", cfg.Kiln, err)
	}
	res.Arch = arch
	kver, kerr := KernelVersion(cfg.Kernel)
	if kerr == nil {
		res.KernelVersion = kver
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	modDir := cfg.ModulesDir
	if modDir == "" {
		if modDir, err = FindModulesDir(cfg.Kernel, kver); err != nil {
			return nil, err
		}
	}
	mt, err := OpenModuleTree(modDir)
	if err != nil {
		return nil, err
	}
	names := cfg.Modules
	if names == nil {
		names = DefaultModules
	}
	rs, err := mt.Resolve(names, kver)
	if err != nil {
		return nil, err
	}
	if cfg.StrictModules && len(rs.Missing) > 0 {
		return nil, fmt.Errorf("modules not found in %s and not built in: %s", modDir, strings.Join(rs.Missing, ", "))
	}
	res.Builtin, res.Missing, res.Notes = rs.Builtin, rs.Missing, rs.Notes

	t := NewTree()
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin", "var/lib/kiln-agent"} {
		if err := t.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	steps := []error{
		t.Dir("tmp", 0o1777),
		t.CharDevice("dev/console", 0o600, 5, 1),
		t.CharDevice("dev/null", 0o666, 1, 3),
		t.FileFrom(BusyboxPath, 0o755, cfg.Busybox),
		t.Symlink("bin/sh", "busybox"),
		t.FileFrom(KilnPath, 0o755, cfg.Kiln),
		t.File("init", 0o755, []byte(initScript)),
		t.File(DHCPScriptPath, 0o755, []byte(dhcpScript)),
		t.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")),
		t.File("etc/group", 0o644, []byte("root:x:0:\n")),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	var list strings.Builder
	for _, m := range rs.Modules {
		p := ModulesDir + "/" + m.Name + ".ko"
		if err := t.File(p, 0o644, m.Data); err != nil {
			return nil, err
		}
		fmt.Fprintf(&list, "/%s\n", p)
		res.Modules = append(res.Modules, m.Name)
	}
	if err := t.File(ModuleListPath, 0o644, []byte(list.String())); err != nil {
		return nil, err
	}
	return t, nil
}

// WriteInitramfs writes the tree as a compressed cpio archive. Both compressors are
// set up to be deterministic: gzip with an empty header (no name, mtime 0), zstd
// single-threaded.
func WriteInitramfs(w io.Writer, t *Tree, compression string, progress func(done int64)) error {
	var zw io.WriteCloser
	switch compression {
	case Gzip, "":
		gw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		zw = gw
	case Zstd:
		// The kernel's unzstd allocates the frame's window; 8 MiB keeps that small.
		ew, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20))
		if err != nil {
			return err
		}
		zw = ew
	default:
		return fmt.Errorf("compression %q is not gzip or zstd", compression)
	}
	bw := bufio.NewWriterSize(zw, 1<<20)
	if err := t.WriteCPIO(bw, progress); err != nil {
		zw.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

// writeAtomic writes path through a temporary file and renames it into place,
// hashing what it writes.
func writeAtomic(path string, fill func(io.Writer) error) (File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return File{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return File{}, err
	}
	abs, _ := filepath.Abs(path)
	return File{Path: abs, SHA256: hex.EncodeToString(h.Sum(nil)), Size: cw.n}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// staticELF checks that p is a statically linked ELF executable (no interpreter: it
// must run in an initramfs without a dynamic loader) and returns its architecture.
func staticELF(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked (has an ELF interpreter)")
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "x86_64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("architecture %s is not x86_64 or arm64", f.Machine)
}

// IsStaticELF reports whether p is a statically linked x86_64 or arm64 executable.
func IsStaticELF(p string) bool {
	_, err := staticELF(p)
	return err == nil
}

// initScript is /init. The kernel runs it as PID 1; it hands over to the kiln
// binary, which does the real work in Go (internal/agent: mounts, modules, network,
// the agent). The lines after exec run only if the kiln binary cannot start, to
// leave a shell on the console rather than a kernel panic.
const initScript = `#!/bin/busybox sh
exec /bin/kiln agent init
/bin/busybox echo "kiln: cannot start /bin/kiln; emergency shell"
/bin/busybox --install -s /bin
exec /bin/busybox sh
`

// dhcpScript is called by busybox udhcpc with deconfig|bound|renew|leasefail|nak and
// the lease in the environment ($ip, $mask as a prefix length, $router, $dns,
// $domain). Renewals replace the address rather than flush it, so the agent's
// connections survive.
const dhcpScript = `#!/bin/sh
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	ip addr replace "$ip/${mask:-24}" dev "$interface"
	for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	echo "$interface $ip/${mask:-24} ${router%% *}" >/run/kiln-dhcp
	;;
esac
exit 0
`
