package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

// TestDefaultBooterUKI: an x86-64 UEFI HTTP boot client of a machine whose profile
// boots a UKI gets the UKI's URL (https under --boot-https efi) and "HTTPClient";
// every other client of that machine keeps the iPXE chain, and so does an HTTP boot
// client of a machine without a UKI or of an unknown MAC.
func TestDefaultBooterUKI(t *testing.T) {
	server := netip.MustParseAddr("10.0.0.1")
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	uki := &Machine{Name: "sb-1", UKI: true}
	plain := &Machine{Name: "plain-1"}
	httpX64 := ClientClass{HTTP: true, Arch: ArchEFIx64HTTP, HasArch: true}
	httpNoArch := ClientClass{HTTP: true}
	httpArm := ClientClass{HTTP: true, Arch: ArchEFIArm64HTTP, HasArch: true}
	pxeEFI := ClientClass{PXE: true, Arch: ArchEFIx64, HasArch: true}
	ipxe := ClientClass{IPXE: true, Arch: ArchEFIx64, HasArch: true}
	for _, tc := range []struct {
		name   string
		policy HTTPSPolicy
		m      *Machine
		class  ClientClass
		want   string
		wantVC string
	}{
		{"uki http boot", HTTPSNever, uki, httpX64, "http://10.0.0.1:8080/uki/52-54-00-12-34-56.efi", "HTTPClient"},
		{"uki http boot, no option 93", HTTPSNever, uki, httpNoArch, "http://10.0.0.1:8080/uki/52-54-00-12-34-56.efi", "HTTPClient"},
		{"uki https boot", HTTPSEFI, uki, httpX64, "https://10.0.0.1:8443/uki/52-54-00-12-34-56.efi", "HTTPClient"},
		{"uki arm64 keeps iPXE", HTTPSNever, uki, httpArm, "http://10.0.0.1:8080/ipxe-arm64.efi", "HTTPClient"},
		{"uki PXE keeps iPXE", HTTPSNever, uki, pxeEFI, "ipxe.efi", ""},
		{"uki iPXE keeps the script", HTTPSNever, uki, ipxe, "http://10.0.0.1:8080/boot.ipxe", ""},
		{"no uki", HTTPSNever, plain, httpX64, "http://10.0.0.1:8080/ipxe.efi", "HTTPClient"},
		{"unknown machine", HTTPSNever, nil, httpX64, "http://10.0.0.1:8080/ipxe.efi", "HTTPClient"},
	} {
		b := &DefaultBooter{HTTPS: tc.policy}
		bi, err := b.BootInfo(context.Background(), BootRequest{MAC: mac, Machine: tc.m, Class: tc.class, Server: server})
		if err != nil || bi == nil {
			t.Fatalf("%s: %v, %v", tc.name, bi, err)
		}
		if bi.Filename != tc.want || bi.VendorClass != tc.wantVC {
			t.Errorf("%s: filename %q vendor class %q, want %q %q", tc.name, bi.Filename, bi.VendorClass, tc.want, tc.wantVC)
		}
	}
}
