package dhcp

import (
	"context"
	"net/netip"
	"testing"
)

// Which clients are sent to the HTTPS listener, per policy: BIOS iPXE cannot trust a
// private CA (README, "HTTPS boot"), so only "always" sends it there.
func TestDefaultBooterHTTPSPolicy(t *testing.T) {
	server := netip.MustParseAddr("10.0.0.1")
	biosIPXE := ClientClass{IPXE: true, PXE: true, Arch: ArchBIOS, HasArch: true}
	efiIPXE := ClientClass{IPXE: true, PXE: true, Arch: ArchEFIx64, HasArch: true}
	arm64IPXE := ClientClass{IPXE: true, Arch: ArchEFIArm64, HasArch: true}
	noArchIPXE := ClientClass{IPXE: true}
	httpBoot := ClientClass{HTTP: true, Arch: ArchEFIx64HTTP, HasArch: true}
	pxeEFI := ClientClass{PXE: true, Arch: ArchEFIx64, HasArch: true}
	for _, tc := range []struct {
		policy HTTPSPolicy
		class  ClientClass
		want   string
	}{
		{"", efiIPXE, "http://10.0.0.1:8080/boot.ipxe"},
		{HTTPSNever, efiIPXE, "http://10.0.0.1:8080/boot.ipxe"},
		{HTTPSNever, httpBoot, "http://10.0.0.1:8080/ipxe.efi"},
		{HTTPSEFI, efiIPXE, "https://10.0.0.1:8443/boot.ipxe"},
		{HTTPSEFI, arm64IPXE, "https://10.0.0.1:8443/boot.ipxe"},
		{HTTPSEFI, biosIPXE, "http://10.0.0.1:8080/boot.ipxe"},
		{HTTPSEFI, noArchIPXE, "http://10.0.0.1:8080/boot.ipxe"},
		{HTTPSEFI, httpBoot, "https://10.0.0.1:8443/ipxe.efi"},
		{HTTPSEFI, pxeEFI, "ipxe.efi"}, // TFTP: no URL at all
		{HTTPSAlways, biosIPXE, "https://10.0.0.1:8443/boot.ipxe"},
	} {
		b := &DefaultBooter{HTTPS: tc.policy}
		bi, err := b.BootInfo(context.Background(), BootRequest{Class: tc.class, Server: server})
		if err != nil || bi == nil {
			t.Fatalf("%s %+v: %v, %v", tc.policy, tc.class, bi, err)
		}
		if bi.Filename != tc.want {
			t.Errorf("policy %q, class %+v: filename %q, want %q", tc.policy, tc.class, bi.Filename, tc.want)
		}
	}
	b := &DefaultBooter{HTTPS: HTTPSEFI, SecureBaseURL: "https://kiln.example:9443/"}
	bi, _ := b.BootInfo(context.Background(), BootRequest{Class: efiIPXE, Server: server})
	if bi.Filename != "https://kiln.example:9443/boot.ipxe" {
		t.Errorf("SecureBaseURL: filename %q", bi.Filename)
	}
}

func TestParseHTTPSPolicy(t *testing.T) {
	for in, want := range map[string]HTTPSPolicy{"": HTTPSNever, "never": HTTPSNever, "efi": HTTPSEFI, "always": HTTPSAlways} {
		if got, err := ParseHTTPSPolicy(in); err != nil || got != want {
			t.Errorf("ParseHTTPSPolicy(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"auto", "EFI", "yes"} {
		if _, err := ParseHTTPSPolicy(in); err == nil {
			t.Errorf("ParseHTTPSPolicy(%q) accepted it", in)
		}
	}
}
