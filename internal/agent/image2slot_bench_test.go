package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// BenchmarkSlotVersusDisk writes the same 64 MiB raw image with image2disk and, as a
// dm-verity image, with image2slot (signature, tree, sha256, every block read
// back and checked against the tree, boot entry), served over loopback HTTP, to a
// regular file in /dev/shm (the page cache and not a host disk's writeback: see
// scripts/bench-image2disk.sh). The ratio of the two is the cost of the slot's
// checks; BENCHMARKS.md has the figures and the command.
func BenchmarkSlotVersusDisk(b *testing.B) {
	if _, err := exec.LookPath("veritysetup"); err != nil {
		b.Skip("veritysetup missing (cryptsetup-bin)")
	}
	data := testImage(64 << 20)
	fx := newSlotFixtureTB(b, data)
	srv := newImageServer(b)
	srv.files["root.raw"] = data
	srv.files["root.verity"] = fx.hashDev
	dir := "/dev/shm"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = b.TempDir()
	}
	b.Run("image2disk", func(b *testing.B) {
		disk := tempDisk(b, dir, 80<<20)
		sys := &System{AllowRegularFiles: true}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := image2disk(context.Background(), testEnv(b, sys), Args{"disk": disk, "imageURL": srv.URL + "/root.raw", "sha256": sum(data)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("image2slot", func(b *testing.B) {
		disk, _ := abDiskTB(b, dir, 64)
		esp := &fakeESP{dir: b.TempDir(), source: disk + "#1"}
		sys := esp.system()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			err := image2slot(context.Background(), testEnv(b, sys), Args{"disk": disk, "slot": "b", "version": "bench",
				"imageURL": srv.URL + "/root.raw", "sha256": sum(data),
				"verityURL": srv.URL + "/root.verity", "veritySHA256": sum(fx.hashDev),
				"rootHash": fx.rootHash, "rootHashSignature": fx.sig, "trustedCerts": fx.certPEM, "linux": "/vmlinuz"})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

func tempDisk(b *testing.B, dir string, size int64) string {
	f, err := os.CreateTemp(dir, "kiln-bench-disk-*")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(f.Name()) })
	f.Truncate(size)
	f.Close()
	return f.Name()
}

func abDiskTB(b *testing.B, dir string, rootMiB int) (string, *GPTLayout) {
	p := tempDisk(b, dir, int64(2*rootMiB+16)<<20)
	layout, err := PlanGPT([]PartitionSpec{
		{Label: "esp", Size: "2MiB", Type: "esp"},
		{Label: "root-a", Size: fmt.Sprintf("%dMiB", rootMiB)}, {Label: "root-a-verity", Size: "2MiB"},
		{Label: "root-b", Size: fmt.Sprintf("%dMiB", rootMiB)}, {Label: "root-b-verity", Size: "2MiB"},
	}, int64(2*rootMiB+16)<<20, 512)
	if err != nil {
		b.Fatal(err)
	}
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	if err := layout.Write(f); err != nil {
		b.Fatal(err)
	}
	return p, layout
}
