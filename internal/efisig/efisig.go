// Package efisig encodes UEFI signature lists (EFI_SIGNATURE_LIST, UEFI 2.10
// section 32.4.1): the format of the firmware variables that hold certificates,
// such as TlsCaCertificate, which UEFI HTTPS boot and iPXE's EFI build
// (interface/efi/efi_cacert.c) trust for TLS. OVMF fills TlsCaCertificate from the
// fw_cfg file etc/edk2/https/cacerts, which is one such list; firmware setup screens
// and BMCs ("HTTPS boot certificates") take the same bytes or the PEM.
package efisig

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// GUID is an EFI_GUID in its in-memory layout: the first three fields little-endian.
type GUID [16]byte

// ParseGUID reads the textual form "a5c059a1-94e4-4aa7-87b5-ab155c2bf072".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("GUID %q: not in 8-4-4-4-12 form", s)
	}
	b, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return g, fmt.Errorf("GUID %q: %w", s, err)
	}
	// Data1 (uint32), Data2 and Data3 (uint16) are stored little-endian; Data4 as is.
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(b[6:]))
	copy(g[8:], b[8:])
	return g, nil
}

// String is the textual form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:])
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// CertX509 is EFI_CERT_X509_GUID: each signature's data is one DER certificate.
func CertX509() GUID { return mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072") }

// KilnOwner is the SignatureOwner Kiln writes: an arbitrary but fixed GUID, so that an
// operator can tell Kiln's entry among a variable's lists.
func KilnOwner() GUID { return mustGUID("6b696c6e-0000-4b69-8c6e-626f6f746361") }

// Header sizes from the specification: EFI_SIGNATURE_LIST is a GUID and three
// uint32 (28 bytes); EFI_SIGNATURE_DATA is the owner GUID (16) before the data.
const (
	listHeaderSize = 16 + 4 + 4 + 4
	ownerSize      = 16
)

// X509List is one EFI_SIGNATURE_LIST of type EFI_CERT_X509_GUID holding the DER
// certificate der, owned by owner: SignatureType, SignatureListSize = 28 +
// SignatureSize, SignatureHeaderSize = 0, SignatureSize = 16 + len(der), then the
// owner and the certificate.
func X509List(der []byte, owner GUID) ([]byte, error) {
	if len(der) == 0 {
		return nil, errors.New("EFI signature list: empty certificate")
	}
	sigSize := ownerSize + len(der)
	if uint64(listHeaderSize+sigSize) > 1<<32-1 {
		return nil, errors.New("EFI signature list: certificate too large")
	}
	t := CertX509()
	out := make([]byte, 0, listHeaderSize+sigSize)
	out = append(out, t[:]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(listHeaderSize+sigSize))
	out = binary.LittleEndian.AppendUint32(out, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(sigSize))
	out = append(out, owner[:]...)
	return append(out, der...), nil
}

// Entry is one signature of a parsed list.
type Entry struct {
	Type  GUID
	Owner GUID
	Data  []byte
}

// Parse reads a sequence of EFI_SIGNATURE_LISTs (a variable's whole value), checking
// every size against the buffer.
func Parse(b []byte) ([]Entry, error) {
	var out []Entry
	for len(b) > 0 {
		if len(b) < listHeaderSize {
			return nil, errors.New("EFI signature list: truncated header")
		}
		var typ GUID
		copy(typ[:], b)
		listSize := binary.LittleEndian.Uint32(b[16:])
		hdrSize := binary.LittleEndian.Uint32(b[20:])
		sigSize := binary.LittleEndian.Uint32(b[24:])
		if uint64(listSize) > uint64(len(b)) || uint64(listSize) < uint64(listHeaderSize)+uint64(hdrSize) || sigSize < ownerSize {
			return nil, fmt.Errorf("EFI signature list: sizes (list %d, header %d, signature %d) do not fit %d bytes", listSize, hdrSize, sigSize, len(b))
		}
		body := b[listHeaderSize+int(hdrSize) : listSize]
		if uint64(len(body))%uint64(sigSize) != 0 {
			return nil, fmt.Errorf("EFI signature list: %d bytes of signatures are not a multiple of %d", len(body), sigSize)
		}
		for ; len(body) > 0; body = body[sigSize:] {
			var e Entry
			e.Type = typ
			copy(e.Owner[:], body)
			e.Data = body[ownerSize:sigSize]
			out = append(out, e)
		}
		b = b[listSize:]
	}
	return out, nil
}
