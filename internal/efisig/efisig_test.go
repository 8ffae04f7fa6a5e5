package efisig

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// The EFI_CERT_X509_GUID bytes as they appear in a real variable (the first three
// fields little-endian): what OVMF's TlsCaCertificate and every db dump start with.
func TestCertX509Layout(t *testing.T) {
	want, _ := hex.DecodeString("a159c0a5e494a74a87b5ab155c2bf072")
	if g := CertX509(); !bytes.Equal(g[:], want) {
		t.Fatalf("CertX509 = %x, want %x", g[:], want)
	}
	if s := CertX509().String(); s != "a5c059a1-94e4-4aa7-87b5-ab155c2bf072" {
		t.Fatalf("String = %s", s)
	}
}

func TestX509ListLayout(t *testing.T) {
	der := []byte{0x30, 0x82, 0x01, 0x02, 0xaa}
	b, err := X509List(der, KilnOwner())
	if err != nil {
		t.Fatal(err)
	}
	// 16 type + 4 list size + 4 header size + 4 signature size + 16 owner + DER.
	want, _ := hex.DecodeString("a159c0a5e494a74a87b5ab155c2bf072" + "31000000" + "00000000" + "15000000")
	owner := KilnOwner()
	want = append(append(want, owner[:]...), der...)
	if !bytes.Equal(b, want) {
		t.Fatalf("X509List =\n%x\nwant\n%x", b, want)
	}
	es, err := Parse(b)
	if err != nil || len(es) != 1 || es[0].Type != CertX509() || es[0].Owner != owner || !bytes.Equal(es[0].Data, der) {
		t.Fatalf("Parse = %+v, %v", es, err)
	}
}

func TestParseRefusesBadSizes(t *testing.T) {
	good, _ := X509List([]byte{1, 2, 3}, KilnOwner())
	for name, b := range map[string][]byte{
		"truncated header":       good[:20],
		"list larger than input": good[:len(good)-1],
		"signature smaller than owner": func() []byte {
			c := bytes.Clone(good)
			c[24] = 4
			return c
		}(),
		"header beyond list": func() []byte {
			c := bytes.Clone(good)
			c[20] = 200
			return c
		}(),
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: Parse accepted it", name)
		}
	}
}

func TestParseGUIDRefuses(t *testing.T) {
	for _, s := range []string{"", "a5c059a1-94e4-4aa7-87b5", "zzc059a1-94e4-4aa7-87b5-ab155c2bf072", "a5c059a194e44aa787b5ab155c2bf072"} {
		if _, err := ParseGUID(s); err == nil {
			t.Errorf("ParseGUID(%q) accepted it", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := X509List([]byte{1, 2, 3}, KilnOwner())
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = Parse(b) })
}
