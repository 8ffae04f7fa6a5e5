package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/verity"
)

// slotFixture is a signed verity image made with the real tools: veritysetup
// format for the tree and root hash, openssl smime for the root hash signature
// (the kernel's recipe).
type slotFixture struct {
	data, hashDev []byte
	rootHash      string
	sig           string // base64 DER
	certPEM       string
	otherCertPEM  string // a key that signs nothing trusted
	sign          func(content string) string
	signOther     func(content string) string
}

func newSlotFixture(t *testing.T, data []byte) *slotFixture { return newSlotFixtureTB(t, data) }

func newSlotFixtureTB(t testing.TB, data []byte) *slotFixture {
	t.Helper()
	vs := testkit.NeedTool(t, "veritysetup", "cryptsetup-bin")
	openssl := testkit.NeedTool(t, "openssl", "openssl")
	dir := t.TempDir()
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	f := &slotFixture{data: data}
	dp, hp := filepath.Join(dir, "root.img"), filepath.Join(dir, "root.verity")
	os.WriteFile(dp, data, 0o600)
	out := run(vs, "format", dp, hp, "--salt=6b696c6e")
	m := regexp.MustCompile(`Root hash:\s+([0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("veritysetup printed no root hash:\n%s", out)
	}
	f.rootHash = m[1]
	f.hashDev, _ = os.ReadFile(hp)
	keys := map[string]string{}
	for _, k := range []string{"trusted", "other"} {
		run(openssl, "req", "-x509", "-new", "-nodes", "-days", "3650", "-subj", "/CN=kiln-"+k,
			"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
			"-keyout", filepath.Join(dir, k+".key"), "-out", filepath.Join(dir, k+".pem"))
		b, _ := os.ReadFile(filepath.Join(dir, k+".pem"))
		keys[k] = string(b)
	}
	f.certPEM, f.otherCertPEM = keys["trusted"], keys["other"]
	signWith := func(k string) func(string) string {
		return func(content string) string {
			in, sig := filepath.Join(dir, "content"), filepath.Join(dir, "sig")
			os.WriteFile(in, []byte(content), 0o600)
			run(openssl, "smime", "-sign", "-nocerts", "-noattr", "-binary", "-in", in,
				"-inkey", filepath.Join(dir, k+".key"), "-signer", filepath.Join(dir, k+".pem"), "-outform", "der", "-out", sig)
			b, _ := os.ReadFile(sig)
			return base64.StdEncoding.EncodeToString(b)
		}
	}
	f.sign, f.signOther = signWith("trusted"), signWith("other")
	f.sig = f.sign(f.rootHash)
	return f
}

// abDisk is a regular file with an A/B layout: ESP, root-a, root-a-verity,
// root-b, root-b-verity, data.
func abDisk(t *testing.T) (string, *GPTLayout) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, 32<<20)
	layout, err := PlanGPT([]PartitionSpec{
		{Label: "esp", Size: "2MiB", Type: "esp"},
		{Label: "root-a", Size: "8MiB"}, {Label: "root-a-verity", Size: "1MiB"},
		{Label: "root-b", Size: "8MiB"}, {Label: "root-b-verity", Size: "1MiB"},
		{Label: "data", Size: "rest"},
	}, 32<<20, 512)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	if err := layout.Write(f); err != nil {
		t.Fatal(err)
	}
	return p, layout
}

// fakeESP stands in for mounting the ESP (FAT needs root and a loop device): its
// content lives in a directory, copied in at mount and out at unmount.
type fakeESP struct {
	dir, source string
	mounts      int
}

func (e *fakeESP) system() *System {
	return &System{AllowRegularFiles: true,
		Mount: func(source, target, fstype string) error {
			if source != e.source || fstype != "vfat" {
				return errors.New("fake mount: not the ESP as vfat: " + source + " " + fstype)
			}
			e.mounts++
			return os.CopyFS(target, os.DirFS(e.dir))
		},
		Unmount: func(target string) error {
			os.RemoveAll(e.dir)
			if err := os.CopyFS(e.dir, os.DirFS(target)); err != nil {
				return err
			}
			entries, _ := os.ReadDir(target)
			for _, x := range entries {
				os.RemoveAll(filepath.Join(target, x.Name()))
			}
			return nil
		}}
}

func (e *fakeESP) entries(t *testing.T) map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "loader", "entries"))
	for _, x := range ents {
		b, _ := os.ReadFile(filepath.Join(e.dir, "loader", "entries", x.Name()))
		out[x.Name()] = string(b)
	}
	return out
}

func partBytes(t *testing.T, disk string, p GPTPartition, n int) []byte {
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	f.ReadAt(b, int64(p.First)*512)
	return b
}

func byName(l *GPTLayout, name string) GPTPartition {
	for _, p := range l.Partitions {
		if p.Name == name {
			return p
		}
	}
	panic(name)
}

// TestImage2SlotWritesVerifiesAndCounts: slot a on an empty A/B disk (the only
// system: an entry without a counter), then slot b (an entry with 3 tries, newer,
// so it boots first; a's stays as the fallback), then a again (a's old entry gone).
// The partitions hold the image and the tree veritysetup made, the entries the
// root hash and the slot's partitions.
func TestImage2SlotWritesVerifiesAndCounts(t *testing.T) {
	fx := newSlotFixture(t, testImage(4<<20))
	srv := newImageServer(t)
	srv.files["root.zst"] = compress(t, CompressionZstd, fx.data)
	srv.files["root.verity"] = fx.hashDev
	disk, layout := abDisk(t)
	esp := &fakeESP{dir: t.TempDir(), source: disk + "#1"}
	sys := esp.system()
	args := func(slot, version string) Args {
		return Args{"disk": disk, "slot": slot, "version": version,
			"imageURL": srv.URL + "/root.zst", "sha256": sum(srv.files["root.zst"]),
			"verityURL": srv.URL + "/root.verity", "veritySHA256": sum(fx.hashDev),
			"rootHash": fx.rootHash, "rootHashSignature": fx.sig, "trustedCerts": fx.certPEM,
			"linux": "/vmlinuz", "initrd": []any{"/initrd.img"}, "cmdline": "console=ttyS0 ro"}
	}
	for _, step := range []struct {
		slot, version string
		want          []string // entry files after the step
	}{
		{"a", "v1", []string{"kiln-0001-slot-a.conf"}},
		{"b", "v2", []string{"kiln-0001-slot-a.conf", "kiln-0002-slot-b+3.conf"}},
		{"a", "v3", []string{"kiln-0002-slot-b+3.conf", "kiln-0003-slot-a+3.conf"}},
	} {
		env := testEnv(t, sys)
		if err := image2slot(context.Background(), env, args(step.slot, step.version)); err != nil {
			t.Fatalf("slot %s: %v", step.slot, err)
		}
		if got := partBytes(t, disk, byName(layout, "root-"+step.slot), len(fx.data)); !bytes.Equal(got, fx.data) {
			t.Errorf("slot %s: root-%s does not hold the image", step.slot, step.slot)
		}
		if got := partBytes(t, disk, byName(layout, "root-"+step.slot+"-verity"), len(fx.hashDev)); !bytes.Equal(got, fx.hashDev) {
			t.Errorf("slot %s: root-%s-verity does not hold veritysetup's hash device", step.slot, step.slot)
		}
		ents := esp.entries(t)
		var names []string
		for n := range ents {
			names = append(names, n)
		}
		if strings.Join(sortedStrings(names), " ") != strings.Join(step.want, " ") {
			t.Fatalf("after slot %s: entries %v, want %v", step.slot, sortedStrings(names), step.want)
		}
		e := ents[step.want[len(step.want)-1]]
		if step.slot == "a" && step.version == "v1" {
			e = ents[step.want[0]]
		}
		for _, want := range []string{"title Kiln slot " + step.slot + ": " + step.version, "linux /vmlinuz\ninitrd /initrd.img\n",
			"options console=ttyS0 ro roothash=" + fx.rootHash + " systemd.verity_root_data=PARTLABEL=root-" + step.slot +
				" systemd.verity_root_hash=PARTLABEL=root-" + step.slot + "-verity kiln.slot=" + step.slot + " kiln.version=" + step.version + "\n"} {
			if !strings.Contains(e, want) {
				t.Errorf("slot %s entry lacks %q:\n%s", step.slot, want, e)
			}
		}
		if !strings.Contains(env.message, "written and verified against its signed root hash") {
			t.Errorf("message %q", env.message)
		}
	}
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestImage2SlotRefusals: what is not vouched for is never written, or is wiped
// and gets no boot entry: a signature by an unknown key, a root hash that is not
// the tree's (properly signed), a hash tree edited in transit, a truncated image,
// an image whose sha256 the artifact records but whose blocks are not the tree's,
// an image larger than the slot.
func TestImage2SlotRefusals(t *testing.T) {
	fx := newSlotFixture(t, testImage(4<<20))
	srv := newImageServer(t)
	srv.files["root.raw"] = fx.data
	srv.files["root.verity"] = fx.hashDev
	short := fx.data[:len(fx.data)-4096]
	srv.files["short.raw"] = short
	flipped := bytes.Clone(fx.data)
	flipped[3<<20+5] ^= 1
	srv.files["flipped.raw"] = flipped
	edited := bytes.Clone(fx.hashDev)
	edited[len(edited)-1] ^= 1
	srv.files["edited.verity"] = edited
	otherRoot := strings.Repeat("ab", 32)

	big := testImage(9 << 20)
	bigFx := newSlotFixture(t, big)
	srv.files["big.raw"] = big
	srv.files["big.verity"] = bigFx.hashDev

	cases := []struct {
		name      string
		args      Args
		want      error
		wantMsg   string
		permanent bool
		written   bool // the slot was written to (and must be wiped)
	}{
		{name: "unknown signer", args: Args{"rootHashSignature": fx.signOther(fx.rootHash)}, want: verity.ErrUnknownSigner, permanent: true},
		{name: "signed by a trusted key for another root hash", args: Args{"rootHash": otherRoot, "rootHashSignature": fx.sign(otherRoot)}, want: verity.ErrRootHash, permanent: true},
		{name: "signature of another root hash", args: Args{"rootHashSignature": fx.sign(otherRoot)}, wantMsg: "args.rootHashSignature", permanent: true},
		{name: "hash tree edited", args: Args{"verityURL": srv.URL + "/edited.verity", "veritySHA256": sum(edited)}, wantMsg: "hash tree corrupt", permanent: true},
		{name: "truncated image", args: Args{"imageURL": srv.URL + "/short.raw", "sha256": sum(short)}, wantMsg: "truncated or not this tree's image", written: true},
		{name: "blocks not the tree's", args: Args{"imageURL": srv.URL + "/flipped.raw", "sha256": sum(flipped)}, want: verity.ErrDataBlock, wantMsg: "data block 768 ", written: true},
		{name: "larger than the slot", args: Args{"imageURL": srv.URL + "/big.raw", "sha256": sum(big), "verityURL": srv.URL + "/big.verity", "veritySHA256": sum(bigFx.hashDev),
			"rootHash": bigFx.rootHash, "rootHashSignature": bigFx.sig, "trustedCerts": bigFx.certPEM}, wantMsg: "larger than root-b", permanent: true},
		{name: "no signature", args: Args{"rootHashSignature": ""}, wantMsg: "args.rootHashSignature: required", permanent: true},
		{name: "bad slot", args: Args{"slot": "c"}, wantMsg: `args.slot: "c" is not a or b`, permanent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			disk, layout := abDisk(t)
			// Slot b holds an older system: its first bytes must survive a refusal
			// that comes before writing.
			f, _ := os.OpenFile(disk, os.O_RDWR, 0)
			f.WriteAt(bytes.Repeat([]byte{0xAA}, 4096), int64(byName(layout, "root-b").First)*512)
			f.Close()
			esp := &fakeESP{dir: t.TempDir(), source: disk + "#1"}
			args := Args{"disk": disk, "slot": "b", "version": "v2",
				"imageURL": srv.URL + "/root.raw", "sha256": sum(fx.data),
				"verityURL": srv.URL + "/root.verity", "veritySHA256": sum(fx.hashDev),
				"rootHash": fx.rootHash, "rootHashSignature": fx.sig, "trustedCerts": fx.certPEM, "linux": "/vmlinuz"}
			for k, v := range c.args {
				args[k] = v
			}
			err := image2slot(context.Background(), testEnv(t, esp.system()), args)
			if err == nil {
				t.Fatal("accepted")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("err = %v, want %q in it", err, c.wantMsg)
			}
			if errors.Is(err, errPermanent) != c.permanent {
				t.Errorf("permanent = %v, want %v (%v)", errors.Is(err, errPermanent), c.permanent, err)
			}
			first := partBytes(t, disk, byName(layout, "root-b"), 4096)
			switch {
			case c.written && !bytes.Equal(first, make([]byte, 4096)):
				t.Errorf("slot b was written and not wiped")
			case !c.written && !bytes.Equal(first, bytes.Repeat([]byte{0xAA}, 4096)):
				t.Errorf("slot b was changed by a refusal before writing")
			}
			if esp.mounts != 0 || len(esp.entries(t)) != 0 {
				t.Errorf("the ESP was touched: %d mounts, entries %v", esp.mounts, esp.entries(t))
			}
		})
	}
}
