package minisign_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/testkit"
)

// realKey makes a key pair with the minisign binary (no password, -W).
func realKey(t testing.TB, dir, name string) (pub minisign.PublicKey, secPath string) {
	t.Helper()
	testkit.NeedTool(t, "minisign", "minisign")
	pubPath, secPath := filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	if out, err := exec.Command("minisign", "-G", "-W", "-p", pubPath, "-s", secPath).CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err = minisign.ParsePublicKey(string(b))
	if err != nil {
		t.Fatalf("parse the key minisign wrote: %v", err)
	}
	return pub, secPath
}

// realSign signs file with minisign and returns the .minisig text.
func realSign(t testing.TB, secPath, file, comment string, extra ...string) string {
	t.Helper()
	args := append([]string{"-S", "-s", secPath, "-m", file, "-x", file + ".minisig", "-t", comment}, extra...)
	if out, err := exec.Command("minisign", args...).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	b, err := os.ReadFile(file + ".minisig")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func digest(b []byte) []byte {
	h := minisign.NewHash()
	h.Write(b)
	return h.Sum(nil)
}

// TestVerifyRealMinisign: what the minisign binary signs verifies; a changed byte,
// another key, a truncated signature, a changed trusted comment and a legacy (-l)
// signature are refused, each with its own error.
func TestVerifyRealMinisign(t *testing.T) {
	dir := t.TempDir()
	pub, sec := realKey(t, dir, "ops")
	other, otherSec := realKey(t, dir, "other")
	file := filepath.Join(dir, "image.raw")
	content := []byte(strings.Repeat("a disk image\n", 1000))
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	good := realSign(t, sec, file, "kiln artifact image.raw")
	ring := minisign.KeyRing{other, pub}

	s, err := minisign.ParseSignature(good)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != pub.ID || s.TrustedComment != "kiln artifact image.raw" {
		t.Errorf("parsed key id %s comment %q", s.KeyID, s.TrustedComment)
	}
	if err := ring.Verify(s, digest(content)); err != nil {
		t.Fatalf("a good signature by a trusted key: %v", err)
	}
	if !strings.Contains(mustRead(t, filepath.Join(dir, "ops.pub")), "public key "+pub.ID.String()) {
		t.Errorf("key id %s is not shown as minisign shows it", pub.ID)
	}

	changed := append([]byte{}, content...)
	changed[500] ^= 1
	if err := ring.Verify(s, digest(changed)); !errors.Is(err, minisign.ErrBadSignature) {
		t.Errorf("one byte changed: %v, want minisign.ErrBadSignature", err)
	}
	if err := (minisign.KeyRing{other}).Verify(s, digest(content)); !errors.Is(err, minisign.ErrUnknownKey) {
		t.Errorf("signed by an untrusted key: %v, want minisign.ErrUnknownKey", err)
	}
	// A signature by the other key, presented with the trusted key's id: the id
	// selects the key, the Ed25519 check refuses.
	otherSig, err := minisign.ParseSignature(realSign(t, otherSec, file, "kiln artifact image.raw"))
	if err != nil {
		t.Fatal(err)
	}
	otherSig.KeyID = pub.ID
	if err := ring.Verify(otherSig, digest(content)); !errors.Is(err, minisign.ErrBadSignature) {
		t.Errorf("another key's signature under the trusted key's id: %v, want minisign.ErrBadSignature", err)
	}

	lines := strings.Split(strings.TrimSpace(good), "\n")
	tampered := strings.Join([]string{lines[0], lines[1], "trusted comment: kiln artifact evil.raw", lines[3]}, "\n")
	ts, err := minisign.ParseSignature(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Verify(ts, digest(content)); !errors.Is(err, minisign.ErrBadSignature) || !strings.Contains(err.Error(), "trusted comment") {
		t.Errorf("trusted comment changed: %v, want minisign.ErrBadSignature naming the trusted comment", err)
	}

	for name, text := range map[string]string{
		"truncated (3 lines)":     strings.Join(lines[:3], "\n"),
		"truncated base64":        strings.Join([]string{lines[0], lines[1][:40], lines[2], lines[3]}, "\n"),
		"truncated global":        strings.Join([]string{lines[0], lines[1], lines[2], lines[3][:60]}, "\n"),
		"no untrusted comment":    strings.Join([]string{"hello", lines[1], lines[2], lines[3]}, "\n"),
		"empty":                   "",
		"public key as signature": mustRead(t, filepath.Join(dir, "ops.pub")),
	} {
		if _, err := minisign.ParseSignature(text); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	legacy := realSign(t, sec, file, "legacy", "-l")
	if _, err := minisign.ParseSignature(legacy); err == nil || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("legacy signature: %v, want a refusal naming it", err)
	}
	// CRLF, as a manifest edited on another system may have it.
	if _, err := minisign.ParseSignature(strings.ReplaceAll(good, "\n", "\r\n")); err != nil {
		t.Errorf("CRLF signature: %v", err)
	}
}

func TestParsePublicKey(t *testing.T) {
	const pub = "untrusted comment: minisign public key 5B7B8832CD268B3E\nRWQ+iybNMoh7W2uOFHm4LWSsQcjOqtB8F6iBTL68Y6vu0yRu1rUIrrUe\n"
	k, err := minisign.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if k.ID.String() != "5B7B8832CD268B3E" {
		t.Errorf("key id %s, want minisign's 5B7B8832CD268B3E", k.ID)
	}
	// minisign prints an id without leading zeros (seen: "minisign public key
	// 4E3C0B0D0929480" for a key whose id's top byte is 0x04).
	if id := (minisign.KeyID{0x80, 0x94, 0x92, 0xd0, 0xb0, 0xc0, 0xe3, 0x04}); id.String() != "4E3C0B0D0929480" {
		t.Errorf("key id %s, want minisign's 4E3C0B0D0929480", id)
	}
	if _, err := minisign.ParsePublicKey("RWQ+iybNMoh7W2uOFHm4LWSsQcjOqtB8F6iBTL68Y6vu0yRu1rUIrrUe"); err != nil {
		t.Errorf("base64 line alone: %v", err)
	}
	for _, bad := range []string{"", "untrusted comment: x\n", "RWQ+iybNMoh7W2uOFHm4LWSs", "untrusted comment: x\nAAAA\nBBBB\n"} {
		if _, err := minisign.ParsePublicKey(bad); err == nil {
			t.Errorf("%q: parsed", bad)
		}
	}
}

func mustRead(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzParseSignature: the parser never panics, bounds what it accepts, and whatever
// it accepts verifies or fails cleanly against a key.
func FuzzParseSignature(f *testing.F) {
	f.Add("untrusted comment: signature from minisign secret key\nRUQ+iybNMoh7Wy9s6Jy9Qhxlv1AwxXDua3rXkVcx6nms0zfZ+sXUceGMu/3sUPp8uKJx+OxEb5pxCrw2Rbc/16o1KAs/jITcbgw=\ntrusted comment: kiln test\n0q+cNrDykp+DYMGmQfPdDQ66bO/mDByKW3oT0Uy3e+D+dEv1CBPlLA9YEWtV9gw+QOwITNvtd2m/dVC3lL2yDQ==\n")
	f.Add("untrusted comment:\n\ntrusted comment: \n\n")
	key, err := minisign.ParsePublicKey("RWQ+iybNMoh7W2uOFHm4LWSsQcjOqtB8F6iBTL68Y6vu0yRu1rUIrrUe")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := minisign.ParseSignature(text)
		if err != nil {
			return
		}
		if len(text) > minisign.MaxSignatureLen {
			t.Fatalf("accepted %d bytes", len(text))
		}
		_ = minisign.KeyRing{key}.Verify(s, digest([]byte("hello\n")))
		_, _ = minisign.ParsePublicKey(text)
	})
}
