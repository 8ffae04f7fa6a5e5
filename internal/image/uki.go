package image

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultEFIStub is systemd's EFI stub for x86_64 (Debian: systemd-boot-efi).
const DefaultEFIStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// UKIArtifact is the Artifact name of the agent UKI.
const UKIArtifact = "kiln-agent-uki"

// UKIOptions make Build also assemble the agent as a Unified Kernel Image:
// systemd's EFI stub with the kernel, the initramfs, the command line and an
// os-release as PE sections, signed for Secure Boot when a key is given.
type UKIOptions struct {
	// Stub is the EFI stub; empty: DefaultEFIStub.
	Stub string
	// Cmdline is the kernel command line built into the image. Under Secure Boot
	// the stub ignores a command line passed by the firmware or a boot loader, so
	// what the agent needs (kiln.server=, kiln.ca_fingerprint=, console=) goes here.
	Cmdline string
	// SecureBootKey and SecureBootCert are the operator's db key (PEM, RSA) and its
	// certificate; both empty: the UKI is not signed.
	SecureBootKey, SecureBootCert string
}

// Section addresses of the UKI. systemd 252's stub (Debian 12) reads the sections
// by name; ukify and the systemd documentation place them at these addresses, above
// the stub's own image (which ends below 0x20000) and apart from each other.
const (
	ukiOSRelVMA   = 0x20000
	ukiCmdlineVMA = 0x30000
	ukiLinuxVMA   = 0x2000000
	ukiMaxSmall   = 0x10000 // .osrel and .cmdline must fit before the next section
)

// ukiSections computes the section layout: the initrd follows the kernel, 1 MiB
// aligned, so the two never overlap whatever the kernel's size.
func ukiSections(kernelSize int64) (linux, initrd int64) {
	const mib = 1 << 20
	return ukiLinuxVMA, (ukiLinuxVMA + kernelSize + 2*mib - 1) &^ (mib - 1)
}

// osRelease is the UKI's .osrel: what systemd-boot and `bootctl` show for it.
func osRelease(kernelVersion string) string {
	v := cmp.Or(kernelVersion, "unknown")
	return fmt.Sprintf("NAME=\"Kiln agent\"\nID=kiln-agent\nVERSION_ID=%q\nPRETTY_NAME=\"Kiln agent (kernel %s)\"\n", v, v)
}

// check validates the options and loads the signing key before anything is
// written, so that bad input changes nothing.
func (o UKIOptions) check() (*SecureBootSigner, error) {
	if _, err := os.Stat(cmp.Or(o.Stub, DefaultEFIStub)); err != nil {
		return nil, fmt.Errorf("EFI stub: %w (install Debian's systemd-boot-efi)", err)
	}
	if strings.ContainsAny(o.Cmdline, "\n\r\x00") {
		return nil, errors.New("UKI command line (--uki-cmdline): must be one line")
	}
	if len(o.Cmdline) >= ukiMaxSmall {
		return nil, fmt.Errorf("UKI command line (--uki-cmdline): %d bytes, at most %d", len(o.Cmdline), ukiMaxSmall-1)
	}
	if (o.SecureBootKey == "") != (o.SecureBootCert == "") {
		return nil, errors.New("--secureboot-key and --secureboot-cert go together")
	}
	if _, err := exec.LookPath("objcopy"); err != nil {
		return nil, fmt.Errorf("objcopy (binutils) is needed to assemble a UKI: %w", err)
	}
	if o.SecureBootKey == "" {
		return nil, nil
	}
	return LoadSecureBootSigner(o.SecureBootKey, o.SecureBootCert)
}

// buildUKI assembles (objcopy) and signs (if signer is set) the UKI into path.
// objcopy is binutils' and is deterministic for the same inputs; signing is done
// here (authenticode.go).
func buildUKI(ctx context.Context, o UKIOptions, signer *SecureBootSigner, kernel, initrd, kernelVersion, path string) (File, error) {
	stub := cmp.Or(o.Stub, DefaultEFIStub)
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		return File{}, fmt.Errorf("objcopy (binutils) is needed to assemble a UKI: %w", err)
	}
	kinfo, err := os.Stat(kernel)
	if err != nil {
		return File{}, fmt.Errorf("kernel: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".uki-")
	if err != nil {
		return File{}, err
	}
	defer os.RemoveAll(tmp)
	osrel, cmdline := filepath.Join(tmp, "osrel"), filepath.Join(tmp, "cmdline")
	if err := os.WriteFile(osrel, []byte(osRelease(kernelVersion)), 0o644); err != nil {
		return File{}, err
	}
	if err := os.WriteFile(cmdline, []byte(o.Cmdline), 0o644); err != nil {
		return File{}, err
	}
	linuxVMA, initrdVMA := ukiSections(kinfo.Size())
	unsigned := filepath.Join(tmp, "unsigned.efi")
	args := []string{
		"--add-section", ".osrel=" + osrel, "--change-section-vma", fmt.Sprintf(".osrel=%#x", ukiOSRelVMA),
		"--add-section", ".cmdline=" + cmdline, "--change-section-vma", fmt.Sprintf(".cmdline=%#x", ukiCmdlineVMA),
		"--add-section", ".linux=" + kernel, "--change-section-vma", fmt.Sprintf(".linux=%#x", linuxVMA),
		"--add-section", ".initrd=" + initrd, "--change-section-vma", fmt.Sprintf(".initrd=%#x", initrdVMA),
		stub, unsigned,
	}
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, objcopy, args...)
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return File{}, fmt.Errorf("assemble the UKI with objcopy: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	img, err := os.ReadFile(unsigned)
	if err != nil {
		return File{}, err
	}
	if signer != nil {
		if img, err = signer.SignPE(img); err != nil {
			return File{}, fmt.Errorf("sign the UKI: %w", err)
		}
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(img)
		return err
	})
}
