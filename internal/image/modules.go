package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the modules the agent environment carries unless told
// otherwise: the NIC, storage and filesystem drivers of common servers and VMs.
// Built-in ones and ones the kernel does not have are skipped with a note. Bus
// drivers are named too (virtio_pci): nothing depends on them, yet without them no
// device appears.
var DefaultModules = []string{
	// NICs
	"virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "bnxt_en", "tg3", "r8169", "vmxnet3",
	// storage
	"virtio_blk", "virtio_scsi", "nvme", "ahci", "ata_piix", "sd_mod", "megaraid_sas", "mpt3sas",
	// filesystems write-file mounts; ext4 wants crc32c through the crypto API (a softdep)
	"ext4", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1", "crc32c_generic", "crc32c_intel",
}

// Module is one kernel module of the initramfs, decompressed.
type Module struct {
	Name    string   // module name, '-' folded to '_'
	Source  string   // file it came from
	Depends []string // hard dependencies (modinfo depends=)
	Data    []byte   // plain ELF (busybox insmod and finit_module without flags load it)
}

// ModuleTree indexes a kernel's module directory: /lib/modules/<version> as a kernel
// package ships it, or a flat directory of .ko files. Dependencies are read from each
// module's .modinfo section, so no modules.dep (which depmod writes at install time,
// and a downloaded package lacks) is needed.
type ModuleTree struct {
	Dir     string
	files   map[string]string // name -> path
	builtin map[string]bool
}

// moduleName folds a module file name to its module name: virtio-net.ko.xz -> virtio_net.
func moduleName(file string) (string, bool) {
	base := filepath.Base(file)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) {
			return strings.ReplaceAll(strings.TrimSuffix(base, ext), "-", "_"), true
		}
	}
	return "", false
}

// OpenModuleTree walks dir for module files and reads modules.builtin if present.
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{Dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := moduleName(p); ok {
			if _, dup := t.files[name]; !dup { // WalkDir is sorted: the first wins, deterministically
				t.files[name] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("module directory: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if name, ok := moduleName(strings.TrimSpace(sc.Text())); ok {
				t.builtin[name] = true
			}
		}
	}
	if len(t.files) == 0 && len(t.builtin) == 0 {
		return nil, fmt.Errorf("module directory %s: no .ko files and no modules.builtin", dir)
	}
	return t, nil
}

// Len is the number of module files found.
func (t *ModuleTree) Len() int { return len(t.files) }

// Resolution is the outcome of ModuleTree.Resolve.
type Resolution struct {
	Modules []*Module // load order: every module after its dependencies
	Builtin []string  // asked for but built into the kernel
	Missing []string  // asked for but neither a file nor built in
	Notes   []string  // soft dependencies that could not be found, and the like
}

// Resolve finds the named modules and their dependencies, in load order. A hard
// dependency that cannot be found is an error (the module would not load); a module
// asked for that does not exist is reported in Missing for the caller to judge.
// kernelVersion, if set, must match every module's vermagic.
func (t *ModuleTree) Resolve(names []string, kernelVersion string) (*Resolution, error) {
	res := &Resolution{}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string, soft bool) error
	visit = func(name, from string, soft bool) error {
		name = strings.ReplaceAll(strings.TrimSpace(name), "-", "_")
		if name == "" || state[name] == 2 {
			return nil
		}
		if state[name] == 1 {
			return fmt.Errorf("module %s: dependency cycle through %s", from, name)
		}
		if t.builtin[name] {
			if from == "" {
				res.Builtin = append(res.Builtin, name)
			}
			state[name] = 2
			return nil
		}
		p, ok := t.files[name]
		if !ok && soft {
			if alias, known := softdepAliases[name]; known {
				name = alias
				p, ok = t.files[name]
				if state[name] == 2 {
					return nil
				}
			}
		}
		if !ok {
			switch {
			case from == "":
				res.Missing = append(res.Missing, name)
			case soft:
				res.Notes = append(res.Notes, fmt.Sprintf("%s: soft dependency %s not found (may be an alias)", from, name))
			default:
				return fmt.Errorf("module %s depends on %s, which is neither in %s nor built in", from, name, t.Dir)
			}
			state[name] = 2
			return nil
		}
		state[name] = 1
		m, info, err := readModule(p)
		if err != nil {
			return err
		}
		m.Name = name
		if kernelVersion != "" {
			if vm := strings.Fields(info["vermagic"]); len(vm) > 0 && vm[0] != kernelVersion {
				return fmt.Errorf("module %s (%s) is built for kernel %s, not %s", name, p, vm[0], kernelVersion)
			}
		}
		for _, d := range strings.Split(info["depends"], ",") {
			if d = strings.TrimSpace(d); d != "" {
				m.Depends = append(m.Depends, d)
				if err := visit(d, name, false); err != nil {
					return err
				}
			}
		}
		pre, post := parseSoftdep(info["softdep"])
		for _, d := range pre {
			if err := visit(d, name, true); err != nil {
				return err
			}
		}
		res.Modules = append(res.Modules, m)
		state[name] = 2
		for _, d := range post {
			if err := visit(d, name, true); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, "", false); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// softdepAliases resolves the soft dependencies of common modules that name a
// crypto algorithm rather than a module (ext4, jbd2, btrfs: "pre: crc32c"); without a
// modules.alias (depmod's output, which a kernel package does not ship) the name
// cannot be looked up. The generic implementation works on every CPU.
var softdepAliases = map[string]string{
	"crc32c":        "crc32c_generic",
	"crypto_crc32c": "crc32c_generic",
	"crct10dif":     "crct10dif_generic",
}

// parseSoftdep splits "pre: crc32c post: foo" into its lists.
func parseSoftdep(s string) (pre, post []string) {
	var cur *[]string
	for _, f := range strings.Fields(s) {
		switch f {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, f)
			}
		}
	}
	return pre, post
}

// readModule reads and decompresses a module file and parses its .modinfo.
func readModule(p string) (*Module, map[string]string, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	data, err := decompressModule(p, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("module %s: %w", p, err)
	}
	info, err := Modinfo(data)
	if err != nil {
		return nil, nil, fmt.Errorf("module %s: %w", p, err)
	}
	return &Module{Source: p, Data: data}, info, nil
}

func decompressModule(p string, raw []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(p, ".xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		r = xr
	case strings.HasSuffix(p, ".zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		r = gr
	default:
		return raw, nil
	}
	return io.ReadAll(io.LimitReader(r, 1<<30))
}

// Modinfo parses the key=value strings of a module's .modinfo ELF section. Repeated
// keys (alias) are joined with commas.
func Modinfo(elfData []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(elfData))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok || k == "" {
			continue
		}
		if old, dup := info[k]; dup && old != "" {
			v = old + "," + v
		}
		info[k] = v
	}
	return info, nil
}

// KernelVersion reads the version string of an x86 bzImage (the boot protocol's
// kernel_version field, Documentation/arch/x86/boot.rst) and returns its first word,
// "6.1.0-56-amd64": the name of the kernel's /lib/modules directory.
func KernelVersion(kernel string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("%s: too short for a bzImage", kernel)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%s: not an x86 bzImage (no HdrS)", kernel)
	}
	ptr := int64(binary.LittleEndian.Uint16(hdr[0x20e:]))
	if ptr == 0 {
		return "", fmt.Errorf("%s: bzImage carries no version string", kernel)
	}
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, ptr+0x200)
	if n == 0 {
		return "", fmt.Errorf("%s: version string: %v", kernel, err)
	}
	s := string(buf[:n])
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	fs := strings.Fields(s)
	if len(fs) == 0 {
		return "", fmt.Errorf("%s: empty version string", kernel)
	}
	return fs[0], nil
}

// FindModulesDir guesses the module directory of a kernel file: the layout of an
// extracted kernel package (boot/vmlinuz-V beside lib/modules/V), the host's
// /lib/modules/V for /boot/vmlinuz-V, or a flat "modules" directory beside the
// kernel (as scripts/e2e-assets.sh leaves it).
func FindModulesDir(kernel, version string) (string, error) {
	dir := filepath.Dir(kernel)
	var cands []string
	if version != "" {
		cands = append(cands,
			filepath.Join(dir, "..", "lib", "modules", version),
			filepath.Join(dir, "..", "usr", "lib", "modules", version),
			filepath.Join(dir, "lib", "modules", version))
		if abs, _ := filepath.Abs(dir); abs == "/boot" {
			cands = append(cands, "/lib/modules/"+version)
		}
	}
	cands = append(cands, filepath.Join(dir, "modules"))
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("no module directory found for %s (looked in %s); give --modules-dir", kernel, strings.Join(cands, ", "))
}
