package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeELF builds a minimal ELF64 file: a .modinfo section holding modinfo (for fake
// kernel modules), and a PT_INTERP program header when interp is set (for a fake
// dynamically linked binary). debug/elf reads it like a real one.
func fakeELF(t testing.TB, machine elf.Machine, typ elf.Type, modinfo []string, interp bool) []byte {
	t.Helper()
	var mi []byte
	for _, kv := range modinfo {
		mi = append(mi, kv...)
		mi = append(mi, 0)
	}
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, phsize, shsize = 64, 56, 64
	phnum := 0
	if interp {
		phnum = 1
	}
	interpStr := []byte("/lib64/ld-linux-x86-64.so.2\x00")
	off := uint64(ehsize + phnum*phsize)
	interpOff := off
	if interp {
		off += uint64(len(interpStr))
	}
	miOff := off
	off += uint64(len(mi))
	strOff := off
	off += uint64(len(shstr))
	shoff := (off + 7) &^ 7

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(typ), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT),
		Shoff: shoff, Ehsize: ehsize, Phentsize: phsize, Phnum: uint16(phnum),
		Shentsize: shsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if interp {
		hdr.Phoff = ehsize
	}
	binary.Write(&b, binary.LittleEndian, hdr)
	if interp {
		binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_INTERP), Off: interpOff,
			Filesz: uint64(len(interpStr)), Memsz: uint64(len(interpStr)), Align: 1})
		b.Write(interpStr)
	}
	b.Write(mi)
	b.Write(shstr)
	for uint64(b.Len()) < shoff {
		b.WriteByte(0)
	}
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: miOff, Size: uint64(len(mi)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	}
	for _, s := range sections {
		binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

// fakeModule is a fake kernel module with the given dependencies.
func fakeModule(t testing.TB, name, kver string, depends []string, extra ...string) []byte {
	info := append([]string{"name=" + name, "depends=" + strings.Join(depends, ","),
		"vermagic=" + kver + " SMP preempt mod_unload modversions "}, extra...)
	return fakeELF(t, elf.EM_X86_64, elf.ET_REL, info, false)
}

// fakeKernel is a file with just enough bzImage header for KernelVersion.
func fakeKernel(kver string) []byte {
	b := make([]byte, 0x400)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x20e:], 0x100) // version string at 0x300
	copy(b[0x300:], kver+" (builder@example) #1 SMP Debian\x00")
	for i := 0x340; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func writeFile(t testing.TB, p string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
}
