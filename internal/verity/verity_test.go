package verity_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/verity"
)

// testData is n bytes of reproducible noise.
func testData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// veritysetupFormat runs the real tool on data and returns the hash device it
// wrote and the root hash it printed.
func veritysetupFormat(t *testing.T, data []byte, args ...string) (hashDev []byte, root string) {
	t.Helper()
	tool := testkit.NeedTool(t, "veritysetup", "cryptsetup-bin")
	dir := t.TempDir()
	dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	if err := os.WriteFile(dp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, append([]string{"format", dp, hp}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Root hash:\s+([0-9a-f]{64})`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("veritysetup printed no root hash:\n%s", out)
	}
	hashDev, err = os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	return hashDev, string(m[1])
}

// TestTreeMatchesVeritysetup: the superblock veritysetup writes parses, the tree
// Kiln builds from the data is byte for byte the tree veritysetup wrote, both
// hash to the root hash it printed, and the data checks against it; for one
// level, two levels (more blocks than one hash block holds) and three (512-byte
// hash blocks), with and without salt.
func TestTreeMatchesVeritysetup(t *testing.T) {
	cases := []struct {
		name   string
		blocks int
		args   []string
	}{
		{"two blocks", 2, []string{"--salt=00ff"}},
		{"one level", 73, []string{"--salt=0011"}},
		{"two levels", 300, []string{"--salt=" + strings.Repeat("ab", 32)}},
		{"three levels 512-byte blocks", 600, []string{"--data-block-size=512", "--hash-block-size=512", "--salt=-"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bs := 4096
			if strings.Contains(c.name, "512") {
				bs = 512
			}
			data := testData(c.blocks*bs, uint64(c.blocks))
			hashDev, root := veritysetupFormat(t, data, c.args...)
			sb, err := verity.ParseSuperblock(hashDev)
			if err != nil {
				t.Fatal(err)
			}
			if sb.DataBlocks != uint64(c.blocks) || sb.DataBlockSize != uint32(bs) || sb.HashBlockSize != uint32(bs) {
				t.Fatalf("superblock %+v, want %d blocks of %d", sb, c.blocks, bs)
			}
			if got := sb.HashDeviceSize(); got != int64(len(hashDev)) {
				t.Errorf("HashDeviceSize %d, veritysetup wrote %d bytes", got, len(hashDev))
			}
			// What apply checks verity partitions against (agentwire imports nothing).
			if got := agentwire.VerityHashSize(int64(len(data))); bs == 4096 && got != int64(len(hashDev)) {
				t.Errorf("agentwire.VerityHashSize %d, veritysetup wrote %d bytes", got, len(hashDev))
			}
			if !bytes.Equal(sb.Marshal(), hashDev[:verity.SuperblockSize]) {
				t.Errorf("Marshal differs from veritysetup's superblock")
			}
			built, err := verity.BuildTree(sb, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(built.Bytes(), hashDev[sb.HashOffset():]) {
				t.Errorf("built tree differs from veritysetup's")
			}
			if got := hex.EncodeToString(built.Root()); got != root {
				t.Errorf("root %s, veritysetup printed %s", got, root)
			}
			tree, err := verity.ReadTree(sb, bytes.NewReader(hashDev))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := verity.ParseRootHash(root)
			if err := tree.Check(want); err != nil {
				t.Errorf("Check: %v", err)
			}
			if err := tree.CheckData(bytes.NewReader(data)); err != nil {
				t.Errorf("CheckData: %v", err)
			}
		})
	}
}

// TestBadImagesRefused: a flipped data byte names its block; truncated data and a
// truncated hash device are refused with how far they got; a root hash that is
// not the tree's is verity.ErrRootHash; a tree level edited inside is found.
func TestBadImagesRefused(t *testing.T) {
	const blocks = 300
	data := testData(blocks*4096, 3)
	hashDev, root := veritysetupFormat(t, data, "--salt=0011")
	sb, err := verity.ParseSuperblock(hashDev)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := verity.ParseRootHash(root)
	tree, err := verity.ReadTree(sb, bytes.NewReader(hashDev))
	if err != nil {
		t.Fatal(err)
	}

	flipped := bytes.Clone(data)
	flipped[200*4096+17] ^= 1
	if err := tree.CheckData(bytes.NewReader(flipped)); !errors.Is(err, verity.ErrDataBlock) || !strings.Contains(err.Error(), "data block 200 ") {
		t.Errorf("one byte flipped in block 200: %v, want verity.ErrDataBlock naming block 200", err)
	}
	if err := tree.CheckData(bytes.NewReader(data[:len(data)-1])); err == nil || !strings.Contains(err.Error(), "data truncated") {
		t.Errorf("data one byte short: %v, want data truncated", err)
	}
	if _, err := verity.ReadTree(sb, bytes.NewReader(hashDev[:len(hashDev)-4096])); err == nil || !strings.Contains(err.Error(), "hash device truncated") {
		t.Errorf("hash device one block short: %v, want hash device truncated", err)
	}
	other := bytes.Clone(want)
	other[0] ^= 0x80
	if err := tree.Check(other); !errors.Is(err, verity.ErrRootHash) {
		t.Errorf("another root hash: %v, want verity.ErrRootHash", err)
	}
	// Level 0 edited (the last level on the device): the top still hashes to the
	// root only if the edit is not seen, which Check must not allow.
	edited := bytes.Clone(hashDev)
	edited[len(edited)-4096+5] ^= 1
	et, err := verity.ReadTree(sb, bytes.NewReader(edited))
	if err != nil {
		t.Fatal(err)
	}
	if err := et.Check(want); err == nil || !strings.Contains(err.Error(), "level 0 block 2 does not match level 1") {
		t.Errorf("level 0 edited: %v, want the corrupt block named", err)
	}
}

// TestSuperblockRefusals: each field Kiln cannot check the kernel's way is refused
// by name.
func TestSuperblockRefusals(t *testing.T) {
	good := (&verity.Superblock{Version: 1, HashType: 1, Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 10, Salt: []byte{1, 2}}).Marshal()
	if _, err := verity.ParseSuperblock(good); err != nil {
		t.Fatalf("good superblock: %v", err)
	}
	cases := map[string]struct {
		off  int
		val  []byte
		want string
	}{
		"magic":      {0, []byte("VERITY"), "no \"verity\" signature"},
		"version":    {8, []byte{2}, "version 2"},
		"hash type":  {12, []byte{0}, "hash type 0"},
		"algorithm":  {32, []byte("sha1\x00\x00"), "algorithm \"sha1\""},
		"data block": {64, []byte{0, 0x30, 0, 0}, "data block size 12288"},
		"hash block": {68, []byte{0, 1, 0, 0}, "hash block size 256"},
		"one block":  {72, []byte{1}, "1 data blocks, at least 2"},
		"salt":       {80, []byte{1, 1}, "salt size 257"},
	}
	for name, c := range cases {
		b := bytes.Clone(good)
		copy(b[c.off:], c.val)
		if _, err := verity.ParseSuperblock(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	if _, err := verity.ParseSuperblock(good[:100]); err == nil {
		t.Errorf("100 bytes accepted")
	}
}

// FuzzParseSuperblock: any 512 bytes parse or are refused; what parses has a
// tree whose size is consistent.
func FuzzParseSuperblock(f *testing.F) {
	f.Add((&verity.Superblock{Version: 1, HashType: 1, Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 73, Salt: []byte{0, 0x11}}).Marshal())
	f.Add((&verity.Superblock{Version: 1, HashType: 1, Algorithm: "sha256", DataBlockSize: 512, HashBlockSize: 512, DataBlocks: 1 << 40}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := verity.ParseSuperblock(b)
		if err != nil {
			return
		}
		if sb.TreeSize() < int64(sb.HashBlockSize) || sb.HashDeviceSize() != sb.HashOffset()+sb.TreeSize() || sb.HashOffset() < verity.SuperblockSize {
			t.Fatalf("parsed %+v has an inconsistent tree: %d bytes", sb, sb.TreeSize())
		}
	})
}
