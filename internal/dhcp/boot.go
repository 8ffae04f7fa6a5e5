package dhcp

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Arch is a client system architecture (option 93, RFC 4578 section 2.1, with the
// IANA "Processor Architecture Types" registry for the HTTP boot values).
type Arch uint16

// Architectures Kiln knows how to boot.
const (
	ArchBIOS         Arch = 0  // x86 BIOS PXE
	ArchEFIIA32      Arch = 6  // 32-bit x86 UEFI: no loader shipped, gets no boot file
	ArchEFIx64       Arch = 7  // x86-64 UEFI PXE
	ArchEFIBC        Arch = 9  // "EFI BC": what many x86-64 UEFI firmwares actually send
	ArchEFIArm64     Arch = 11 // arm64 UEFI PXE
	ArchEFIx64HTTP   Arch = 16 // x86-64 UEFI HTTP boot
	ArchEFIArm64HTTP Arch = 19 // arm64 UEFI HTTP boot
)

// Vendor class identifiers (option 60) of network boot clients.
const (
	vendorPXE  = "PXEClient"
	vendorHTTP = "HTTPClient"
)

// ClientClass is what a request says about the software sending it.
type ClientClass struct {
	// Arch is the first architecture of option 93 (or of the vendor class
	// "PXEClient:Arch:xxxxx:..."); valid only when HasArch.
	Arch    Arch
	HasArch bool
	// VendorClass is option 60 as sent ("PXEClient:Arch:00007:UNDI:003016").
	VendorClass string
	PXE         bool // option 60 starts with "PXEClient"
	HTTP        bool // option 60 starts with "HTTPClient" (UEFI HTTP boot)
	// IPXE: the user class (option 77) is "iPXE", or iPXE's option 175 is present.
	IPXE bool
	// UUID is option 97, the client machine identifier (RFC 4578 section 2.3).
	UUID []byte
}

// Netboot reports whether the client is a network boot client at all.
func (c ClientClass) Netboot() bool { return c.PXE || c.HTTP || c.IPXE || c.HasArch }

// classify reads the client class out of a request.
func classify(m *dhcpv4.DHCPv4) ClientClass {
	var c ClientClass
	vc := string(m.Options.Get(dhcpv4.OptionClassIdentifier))
	c.VendorClass = vc
	c.PXE = strings.HasPrefix(vc, vendorPXE)
	c.HTTP = strings.HasPrefix(vc, vendorHTTP)
	// Option 93 is a list of 16-bit types (RFC 4578 2.1); the first is the one the
	// client runs as.
	if a := m.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(a) >= 2 {
		c.Arch, c.HasArch = Arch(binary.BigEndian.Uint16(a)), true
	} else if a, ok := archFromVendorClass(vc); ok {
		// Some firmware (older Intel and Broadcom ROMs) sends no option 93, only the
		// architecture inside the vendor class.
		c.Arch, c.HasArch = a, true
	}
	c.IPXE = isIPXE(m.Options.Get(dhcpv4.OptionUserClassInformation)) || m.Options.Has(dhcpv4.GenericOptionCode(175))
	if u := m.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(u) > 0 {
		c.UUID = u
	}
	return c
}

// archFromVendorClass parses "PXEClient:Arch:00007:UNDI:003016" (PXE 2.1 spec,
// and the "HTTPClient:Arch:00016:..." form of UEFI HTTP boot).
func archFromVendorClass(vc string) (Arch, bool) {
	parts := strings.Split(vc, ":")
	if len(parts) < 3 || parts[1] != "Arch" {
		return 0, false
	}
	n, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil {
		return 0, false
	}
	return Arch(n), true
}

// isIPXE recognizes iPXE's user class. iPXE sends option 77 as the bare string
// "iPXE", not in the length-prefixed RFC 3004 form; accept both.
func isIPXE(uc []byte) bool {
	if string(uc) == "iPXE" {
		return true
	}
	for len(uc) > 0 {
		n := int(uc[0])
		if n == 0 || 1+n > len(uc) {
			return false
		}
		if string(uc[1:1+n]) == "iPXE" {
			return true
		}
		uc = uc[1+n:]
	}
	return false
}

// DefaultBooter is Kiln's standard boot chain:
//
//   - BIOS PXE (arch 0): TFTP BIOSFile (undionly.kpxe, iPXE on the firmware's UNDI driver);
//   - x86-64 UEFI PXE (arch 7 or 9): TFTP EFIx64File (ipxe.efi);
//   - arm64 UEFI PXE (arch 11): TFTP EFIArm64File (ipxe-arm64.efi);
//   - UEFI HTTP boot (arch 16 or 19, vendor class "HTTPClient"): the same iPXE
//     binaries as http:// URLs, with "HTTPClient" echoed in option 60; for an
//     x86-64 machine whose profile boots a UKI (Machine.UKI), the URL of its UKI,
//     UKIPath/<mac>.efi, instead;
//   - iPXE (user class "iPXE"): the boot script URL, BaseURL/Script.
//
// Other clients (an installed OS renewing its address) get no boot information.
type DefaultBooter struct {
	// BaseURL is where HTTP clients fetch from, without a trailing slash; empty:
	// "http://<boot server>:<HTTPPort>".
	BaseURL string
	// HTTPPort is used when BaseURL is empty; 0: 8080, the port of `kiln serve`.
	HTTPPort int
	// File names; empty: the defaults above and "boot.ipxe" for Script.
	BIOSFile, EFIx64File, EFIArm64File, Script string
	// HTTPS says which clients get https:// URLs (iPXE's script, UEFI HTTP boot's
	// binary) instead of http:// ones; the zero value is HTTPSNever.
	HTTPS HTTPSPolicy
	// SecureBaseURL is the https base URL, without a trailing slash; empty:
	// "https://<boot server>:<HTTPSPort>".
	SecureBaseURL string
	// HTTPSPort is used when SecureBaseURL is empty; 0: 8443.
	HTTPSPort int
	// UKIPath is where the boot server serves a machine's UKI, as UKIPath/<mac>.efi
	// (MAC with dashes); empty: "uki". The name ends in .efi because UEFI HTTP boot
	// (EDK2's HttpBootCheckImageType) tells an EFI image by its Content-Type or,
	// failing that, by the URL path's extension.
	UKIPath string
}

// ukiFile is the path of a machine's UKI for an HTTP boot client.
func (b *DefaultBooter) ukiFile(mac net.HardwareAddr) string {
	return cmp.Or(b.UKIPath, "uki") + "/" + strings.ReplaceAll(mac.String(), ":", "-") + ".efi"
}

// HTTPSPolicy is which boot clients are sent to Kiln's HTTPS listener. A client can
// only use it if it trusts Kiln's boot CA, and nothing in a DHCP request says whether
// it does: that is the operator's knowledge, hence a setting.
type HTTPSPolicy string

// HTTPS policies.
const (
	// HTTPSNever: plain HTTP for every client (firmware that trusts no Kiln CA).
	HTTPSNever HTTPSPolicy = "never"
	// HTTPSEFI: https for UEFI clients (iPXE's EFI build and UEFI HTTP boot, which
	// read the firmware's TlsCaCertificate variable), http for BIOS iPXE, which has
	// no way to trust a private CA without a rebuild.
	HTTPSEFI HTTPSPolicy = "efi"
	// HTTPSAlways: https for every client, BIOS too (iPXE rebuilt with TRUST=).
	HTTPSAlways HTTPSPolicy = "always"
)

// ParseHTTPSPolicy reads a policy; "" is HTTPSNever.
func ParseHTTPSPolicy(s string) (HTTPSPolicy, error) {
	switch p := HTTPSPolicy(s); p {
	case "":
		return HTTPSNever, nil
	case HTTPSNever, HTTPSEFI, HTTPSAlways:
		return p, nil
	}
	return "", fmt.Errorf("boot HTTPS policy %q: not never, efi or always", s)
}

// secure reports whether a client is sent https:// URLs.
func (b *DefaultBooter) secure(c ClientClass) bool {
	switch b.HTTPS {
	case HTTPSAlways:
		return true
	case HTTPSEFI:
		// HTTP boot clients are UEFI by definition, whatever architecture they send.
		return c.HTTP || c.HasArch && c.Arch != ArchBIOS
	}
	return false
}

func (b *DefaultBooter) secureURL(server netip.Addr, name string) string {
	base := b.SecureBaseURL
	if base == "" {
		base = "https://" + netip.AddrPortFrom(server, uint16(cmp.Or(b.HTTPSPort, 8443))).String()
	}
	return strings.TrimSuffix(base, "/") + "/" + strings.TrimPrefix(name, "/")
}

// urlFor is the URL of name for client c: https or http by policy.
func (b *DefaultBooter) urlFor(c ClientClass, server netip.Addr, name string) string {
	if b.secure(c) {
		return b.secureURL(server, name)
	}
	return b.url(server, name)
}

func (b *DefaultBooter) url(server netip.Addr, name string) string {
	base := b.BaseURL
	if base == "" {
		port := b.HTTPPort
		if port == 0 {
			port = 8080
		}
		base = "http://" + netip.AddrPortFrom(server, uint16(port)).String()
	}
	return strings.TrimSuffix(base, "/") + "/" + strings.TrimPrefix(name, "/")
}

// efiFile returns the iPXE binary for a UEFI architecture, "" if there is none.
func (b *DefaultBooter) efiFile(a Arch) string {
	switch a {
	case ArchEFIx64, ArchEFIBC, ArchEFIx64HTTP:
		return cmp.Or(b.EFIx64File, "ipxe.efi")
	case ArchEFIArm64, ArchEFIArm64HTTP:
		return cmp.Or(b.EFIArm64File, "ipxe-arm64.efi")
	}
	return ""
}

// BootInfo implements Booter.
func (b *DefaultBooter) BootInfo(_ context.Context, req BootRequest) (*BootInfo, error) {
	c := req.Class
	switch {
	case c.IPXE:
		// iPXE is already running: hand it the script. This check comes first because
		// iPXE also sends "PXEClient" and an architecture, and answering it with the
		// iPXE binary again would loop forever.
		return &BootInfo{Filename: b.urlFor(c, req.Server, cmp.Or(b.Script, "boot.ipxe"))}, nil
	case c.HTTP || c.HasArch && (c.Arch == ArchEFIx64HTTP || c.Arch == ArchEFIArm64HTTP):
		arch := c.Arch
		if !c.HasArch {
			arch = ArchEFIx64HTTP
		}
		// systemd's x86-64 stub is the only UKI Kiln builds: an arm64 client of the
		// same profile keeps iPXE.
		if req.Machine != nil && req.Machine.UKI && arch == ArchEFIx64HTTP {
			return &BootInfo{Filename: b.urlFor(c, req.Server, b.ukiFile(req.MAC)), VendorClass: vendorHTTP}, nil
		}
		f := b.efiFile(arch)
		if f == "" {
			return nil, nil
		}
		// UEFI 2.x section 24.7.2 (HTTP boot): the firmware ignores an offer that does
		// not carry vendor class "HTTPClient", and the boot file must be a URI.
		return &BootInfo{Filename: b.urlFor(c, req.Server, f), VendorClass: vendorHTTP}, nil
	case c.PXE || c.HasArch:
		if !c.HasArch || c.Arch == ArchBIOS {
			return &BootInfo{NextServer: req.Server, Filename: cmp.Or(b.BIOSFile, "undionly.kpxe")}, nil
		}
		if f := b.efiFile(c.Arch); f != "" {
			return &BootInfo{NextServer: req.Server, Filename: f}, nil
		}
		return nil, nil // an architecture we have no loader for
	}
	return nil, nil
}
