package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

const testKver = "6.1.0-99-amd64"

// fakePackage lays out an extracted kernel package: boot/vmlinuz-V and
// lib/modules/V with plain, xz, zstd and gzip modules and a modules.builtin.
func fakePackage(t *testing.T) (root, kernel string) {
	t.Helper()
	root = t.TempDir()
	kernel = filepath.Join(root, "boot", "vmlinuz-"+testKver)
	writeFile(t, kernel, fakeKernel(testKver), 0o644)
	md := filepath.Join(root, "lib", "modules", testKver, "kernel")
	plain := func(rel, name string, deps []string, extra ...string) {
		writeFile(t, filepath.Join(md, rel), fakeModule(t, name, testKver, deps, extra...), 0o644)
	}
	plain("drivers/virtio/virtio_ring.ko", "virtio_ring", nil)
	plain("drivers/virtio/virtio_pci.ko", "virtio_pci", []string{"virtio_pci_modern_dev", "virtio_ring", "virtio"})
	plain("drivers/virtio/virtio_pci_modern_dev.ko", "virtio_pci_modern_dev", nil)
	plain("net/core/failover.ko", "failover", nil)
	plain("drivers/net/net_failover.ko", "net_failover", []string{"failover"})
	plain("fs/ext4/ext4.ko", "ext4", []string{"jbd2", "mbcache", "crc16"}, "softdep=pre: crc32c")
	plain("fs/jbd2/jbd2.ko", "jbd2", nil)
	plain("fs/mbcache.ko", "mbcache", nil)
	plain("arch/x86/crypto/crc32c-intel.ko", "crc32c_intel", nil)

	var xzb bytes.Buffer
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(fakeModule(t, "virtio", testKver, nil))
	xw.Close()
	writeFile(t, filepath.Join(md, "drivers/virtio/virtio.ko.xz"), xzb.Bytes(), 0o644)

	var zb bytes.Buffer
	zw, _ := zstd.NewWriter(&zb)
	zw.Write(fakeModule(t, "virtio_net", testKver, []string{"net_failover", "virtio_ring", "virtio"}))
	zw.Close()
	writeFile(t, filepath.Join(md, "drivers/net/virtio_net.ko.zst"), zb.Bytes(), 0o644)

	var gb bytes.Buffer
	gw := gzip.NewWriter(&gb)
	gw.Write(fakeModule(t, "crc32c_generic", testKver, nil))
	gw.Close()
	writeFile(t, filepath.Join(md, "crypto/crc32c_generic.ko.gz"), gb.Bytes(), 0o644)

	writeFile(t, filepath.Join(root, "lib", "modules", testKver, "modules.builtin"),
		[]byte("kernel/lib/crc16.ko\nkernel/drivers/scsi/sd_mod.ko\n"), 0o644)
	return root, kernel
}

func fakeBinaries(t *testing.T) (busybox, kiln string) {
	dir := t.TempDir()
	busybox, kiln = filepath.Join(dir, "busybox"), filepath.Join(dir, "kiln")
	writeFile(t, busybox, fakeELF(t, elf.EM_X86_64, elf.ET_EXEC, nil, false), 0o755)
	writeFile(t, kiln, append(fakeELF(t, elf.EM_X86_64, elf.ET_EXEC, nil, false), bytes.Repeat([]byte("kiln"), 100000)...), 0o755)
	return busybox, kiln
}

func TestKernelVersion(t *testing.T) {
	_, kernel := fakePackage(t)
	v, err := KernelVersion(kernel)
	if err != nil || v != testKver {
		t.Fatalf("KernelVersion = %q, %v; want %q", v, err, testKver)
	}
	bad := filepath.Join(t.TempDir(), "k")
	writeFile(t, bad, make([]byte, 0x400), 0o644)
	if _, err := KernelVersion(bad); err == nil {
		t.Fatal("a file without HdrS gave a version")
	}
	d, err := FindModulesDir(kernel, v)
	if err != nil || !strings.HasSuffix(d, "lib/modules/"+testKver) {
		t.Fatalf("FindModulesDir = %q, %v", d, err)
	}
}

func TestResolve(t *testing.T) {
	root, _ := fakePackage(t)
	mt, err := OpenModuleTree(filepath.Join(root, "lib", "modules", testKver))
	if err != nil {
		t.Fatal(err)
	}
	res, err := mt.Resolve([]string{"virtio_pci", "virtio-net", "ext4", "sd_mod", "crc32c_intel", "nosuch"}, testKver)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range res.Modules {
		order = append(order, m.Name)
		if _, err := elf.NewFile(bytes.NewReader(m.Data)); err != nil {
			t.Errorf("module %s is not decompressed to ELF: %v", m.Name, err)
		}
	}
	want := []string{"virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci", "failover", "net_failover", "virtio_net",
		"jbd2", "mbcache", "crc32c_generic", "ext4", "crc32c_intel"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("load order\n got %v\nwant %v", order, want)
	}
	if !reflect.DeepEqual(res.Builtin, []string{"sd_mod"}) || !reflect.DeepEqual(res.Missing, []string{"nosuch"}) {
		t.Errorf("builtin %v missing %v", res.Builtin, res.Missing)
	}
	// Every module comes after its dependencies.
	pos := map[string]int{}
	for i, m := range res.Modules {
		pos[m.Name] = i
	}
	for _, m := range res.Modules {
		for _, d := range m.Depends {
			if p, ok := pos[d]; ok && p > pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
	if _, err := mt.Resolve([]string{"virtio"}, "5.10.0-1-amd64"); err == nil || !strings.Contains(err.Error(), "built for kernel") {
		t.Errorf("vermagic mismatch: err = %v", err)
	}
}

func TestResolveMissingDependency(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.ko"), fakeModule(t, "a", testKver, []string{"b"}), 0o644)
	mt, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mt.Resolve([]string{"a"}, ""); err == nil || !strings.Contains(err.Error(), "depends on b") {
		t.Fatalf("err = %v, want a missing dependency", err)
	}
}

func TestStaticCheck(t *testing.T) {
	dir := t.TempDir()
	dyn := filepath.Join(dir, "dyn")
	writeFile(t, dyn, fakeELF(t, elf.EM_X86_64, elf.ET_DYN, nil, true), 0o755)
	if IsStaticELF(dyn) {
		t.Error("a binary with PT_INTERP passed as static")
	}
	txt := filepath.Join(dir, "txt")
	writeFile(t, txt, []byte("#!/bin/sh\n"), 0o755)
	if IsStaticELF(txt) {
		t.Error("a script passed as static")
	}
	busybox, _ := fakeBinaries(t)
	if !IsStaticELF(busybox) {
		t.Error("a static ELF failed the check")
	}
}

func sha(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readInitramfs decompresses and lists an initramfs: name -> header and content.
func readInitramfs(t *testing.T, p string) (map[string]*CPIOHeader, map[string][]byte, []string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader
	if strings.HasSuffix(p, ".zst") {
		zr, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	} else {
		gr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	}
	cr := NewCPIOReader(r)
	hdrs, data := map[string]*CPIOHeader{}, map[string][]byte{}
	var order []string
	for {
		h, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, b
		order = append(order, h.Name)
	}
	return hdrs, data, order
}

func TestBuildReproducible(t *testing.T) {
	_, kernel := fakePackage(t)
	busybox, kiln := fakeBinaries(t)
	for _, comp := range []string{Gzip, Zstd} {
		t.Run(comp, func(t *testing.T) {
			var sums []string
			var last *Result
			for i := 0; i < 2; i++ {
				var stages []string
				cfg := Config{Kernel: kernel, Busybox: busybox, Kiln: kiln, Compression: comp, OutDir: t.TempDir(),
					Modules:  []string{"virtio_pci", "virtio_net", "ext4", "sd_mod", "absent"},
					Progress: func(stage string, done, total int64) { stages = append(stages, stage) }}
				res, err := Build(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				if sha(t, res.Initrd.Path) != res.Initrd.SHA256 || sha(t, res.Kernel.Path) != res.Kernel.SHA256 {
					t.Fatal("reported sha256 is not the file's")
				}
				if len(stages) == 0 || stages[len(stages)-1] != "done" {
					t.Errorf("progress stages %v", stages)
				}
				sums = append(sums, res.Initrd.SHA256)
				last = res
			}
			if sums[0] != sums[1] {
				t.Fatalf("two builds of the same inputs differ: %s vs %s", sums[0], sums[1])
			}
			if last.KernelVersion != testKver || last.Arch != "x86_64" {
				t.Errorf("kernel version %q arch %q", last.KernelVersion, last.Arch)
			}
			if !slices.Equal(last.Missing, []string{"absent"}) || !slices.Equal(last.Builtin, []string{"sd_mod"}) {
				t.Errorf("missing %v builtin %v", last.Missing, last.Builtin)
			}
			hdrs, data, order := readInitramfs(t, last.Initrd.Path)
			if !slices.IsSorted(order) {
				t.Errorf("entries not sorted: %v", order)
			}
			for name, h := range hdrs {
				if h.UID != 0 || h.GID != 0 || h.Mtime != 0 {
					t.Errorf("%s: uid %d gid %d mtime %d", name, h.UID, h.GID, h.Mtime)
				}
			}
			if h := hdrs["init"]; h == nil || h.Mode != sIFREG|0o755 || !strings.Contains(string(data["init"]), "kiln agent init") {
				t.Errorf("init: %+v", h)
			}
			if h := hdrs["dev/console"]; h == nil || h.Mode&sIFMT != sIFCHR || h.RMajor != 5 || h.RMinor != 1 {
				t.Errorf("dev/console: %+v", h)
			}
			if string(data["bin/sh"]) != "busybox" || hdrs["bin/sh"].Mode&sIFMT != sIFLNK {
				t.Errorf("bin/sh is not a symlink to busybox")
			}
			kb, _ := os.ReadFile(kiln)
			if !bytes.Equal(data[KilnPath], kb) {
				t.Error("bin/kiln differs from the input binary")
			}
			list := strings.Fields(string(data[ModuleListPath]))
			if len(list) != len(last.Modules) || list[len(list)-1] != "/lib/modules/ext4.ko" {
				t.Errorf("module list %v (modules %v)", list, last.Modules)
			}
			for _, m := range list {
				if _, err := elf.NewFile(bytes.NewReader(data[strings.TrimPrefix(m, "/")])); err != nil {
					t.Errorf("%s: not a plain ELF module: %v", m, err)
				}
			}
			man := last.Manifest("", "")
			// What `kiln image build` prints (comments, then the documents) is what
			// `kiln apply -f -` reads.
			objs, err := resource.ParseManifests(strings.NewReader("# sha256 lines\n"+man), "build")
			if err != nil || len(objs) != 2 || objs[0].Kind != "Artifact" || objs[1].Metadata.Name != InitrdArtifact {
				t.Errorf("manifest does not parse: %v %v", objs, err)
			}
			for _, want := range []string{"name: kiln-agent-kernel", "name: kiln-agent-initrd", last.Initrd.SHA256, last.Kernel.SHA256, "arch: x86_64"} {
				if !strings.Contains(man, want) {
					t.Errorf("manifest lacks %q:\n%s", want, man)
				}
			}
		})
	}
}

func TestBuildRefusesDynamicKiln(t *testing.T) {
	_, kernel := fakePackage(t)
	busybox, _ := fakeBinaries(t)
	dyn := filepath.Join(t.TempDir(), "kiln")
	writeFile(t, dyn, fakeELF(t, elf.EM_X86_64, elf.ET_DYN, nil, true), 0o755)
	_, err := Build(context.Background(), Config{Kernel: kernel, Busybox: busybox, Kiln: dyn, OutDir: t.TempDir(), Modules: []string{"virtio"}})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("err = %v", err)
	}
	_, kiln := fakeBinaries(t)
	_, err = Build(context.Background(), Config{Kernel: kernel, Busybox: busybox, Kiln: kiln, OutDir: t.TempDir(), Modules: []string{"nosuch"}, StrictModules: true})
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("strict modules: err = %v", err)
	}
}

// TestInitramfsReadByGNUCpio checks the archive with a real cpio (Debian's cpio).
func TestInitramfsReadByGNUCpio(t *testing.T) {
	testkit.NeedTool(t, "cpio", "cpio")
	tr := NewTree()
	must(t, tr.File("etc/hello", 0o640, []byte("hello, initramfs\n")))
	must(t, tr.Symlink("bin/sh", "busybox"))
	must(t, tr.File("a/b/c/odd-size", 0o600, []byte("12345")))
	must(t, tr.Dir("tmp", 0o1777))
	var buf bytes.Buffer
	must(t, tr.WriteCPIO(&buf, nil))
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hello")); string(b) != "hello, initramfs\n" {
		t.Errorf("etc/hello = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a/b/c/odd-size")); string(b) != "12345" {
		t.Errorf("odd-size = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "busybox" {
		t.Errorf("bin/sh -> %q", l)
	}
	if st, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v %v", st.Mode(), err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTreeRejects(t *testing.T) {
	tr := NewTree()
	for _, bad := range []string{"", "/", "a/../b", "a//b", "a/"} {
		if err := tr.File(bad, 0o644, nil); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	must(t, tr.File("x", 0o644, nil))
	if err := tr.File("x", 0o644, nil); err == nil {
		t.Error("duplicate accepted")
	}
	if err := tr.File("x/y", 0o644, nil); err == nil {
		t.Error("file below a file accepted")
	}
}
