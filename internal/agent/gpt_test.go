package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/testkit"
)

func TestPlanGPT(t *testing.T) {
	const disk = 10 << 30
	l, err := PlanGPT([]PartitionSpec{
		{Label: "esp", Size: "512MiB", Type: "esp"},
		{Label: "root", Size: "rest"},
		{Label: "swap", Size: "1GiB", Type: "swap"},
	}, disk, 512)
	if err != nil {
		t.Fatal(err)
	}
	p := l.Partitions
	if p[0].First != 2048 || p[0].Last != 2048+1048576-1 {
		t.Errorf("esp %d-%d", p[0].First, p[0].Last)
	}
	if p[1].First != p[0].Last+1 || p[1].First%2048 != 0 || (p[1].Last+1)%2048 != 0 {
		t.Errorf("root %d-%d not aligned", p[1].First, p[1].Last)
	}
	if p[2].First != p[1].Last+1 || p[2].Last-p[2].First+1 != 2097152 || p[2].Last > l.LastUsable {
		t.Errorf("swap %d-%d, last usable %d", p[2].First, p[2].Last, l.LastUsable)
	}
	if l.LastUsable != disk/512-34 || l.FirstUsable != 34 {
		t.Errorf("usable %d-%d", l.FirstUsable, l.LastUsable)
	}

	bad := []struct {
		specs []PartitionSpec
		want  string
	}{
		{[]PartitionSpec{{Label: "a", Size: "11G"}}, "disk has"},
		{[]PartitionSpec{{Label: "a", Size: "5G"}, {Label: "b", Size: "5G"}}, "disk has"},
		{[]PartitionSpec{{Label: "a"}, {Label: "b", Size: "rest"}}, "only one partition"},
		{[]PartitionSpec{{Label: "a", Size: "1G"}, {Label: "a", Size: "1G"}}, "also partitions[0]"},
		{[]PartitionSpec{{Size: "1G"}}, "label: required"},
		{[]PartitionSpec{{Label: strings.Repeat("x", 37), Size: "1G"}}, "36 UTF-16"},
		{[]PartitionSpec{{Label: "a", Size: "1G", Type: "nope"}}, "not one of"},
		{make([]PartitionSpec, 129), "at most 128"},
		{nil, "no partitions"},
	}
	for _, b := range bad {
		if _, err := PlanGPT(b.specs, disk, 512); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: err = %v, want %q", b.specs, err, b.want)
		}
	}
	if _, err := PlanGPT([]PartitionSpec{{Label: "a"}}, 64<<10, 512); err == nil {
		t.Error("a 64 KiB disk took a GPT")
	}
}

func TestGPTWriteRead(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		size := int64(1 << 30)
		l, err := PlanGPT([]PartitionSpec{{Label: "EFI system", Size: "100M", Type: "esp"}, {Label: "röot", Size: "rest"}}, size, ss)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		f.WriteAt(bytes.Repeat([]byte{0xCC}, 4096), 0)
		if err := l.Write(f); err != nil {
			t.Fatal(err)
		}
		got, err := ReadGPT(f, size, ss)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Partitions) != 2 || got.Partitions[1].Name != "röot" || got.Partitions[0].Type != l.Partitions[0].Type ||
			got.Partitions[1].GUID != l.Partitions[1].GUID || got.DiskGUID != l.DiskGUID || got.Partitions[1].Last != l.Partitions[1].Last {
			t.Errorf("ss %d: read back %+v\nwrote %+v", ss, got, l)
		}
		f.Close()
	}
}

func TestGPTWithSfdisk(t *testing.T) {
	sfdisk := testkit.NeedTool(t, "sfdisk", "fdisk")
	size := int64(2 << 30)
	path := diskFile(t, size)
	err := partition(context.Background(), testEnv(t, &System{AllowRegularFiles: true}), Args{"disk": path, "partitions": []any{
		map[string]any{"label": "esp", "size": "256MiB", "type": "esp"},
		map[string]any{"label": "swap", "size": "512M", "type": "swap"},
		map[string]any{"label": "root", "size": "rest", "type": "linux", "guid": "11111111-2222-3333-4444-555555555555"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sfdisk, "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var pt struct {
		PartitionTable struct {
			Label      string `json:"label"`
			FirstLBA   uint64 `json:"firstlba"`
			LastLBA    uint64 `json:"lastlba"`
			Partitions []struct {
				Start uint64 `json:"start"`
				Size  uint64 `json:"size"`
				Type  string `json:"type"`
				UUID  string `json:"uuid"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	p := pt.PartitionTable
	if p.Label != "gpt" || len(p.Partitions) != 3 || p.LastLBA != uint64(size/512-34) {
		t.Fatalf("sfdisk sees %s", out)
	}
	want := []struct{ name, typ string }{{"esp", agentwire.PartitionTypes["esp"]}, {"swap", agentwire.PartitionTypes["swap"]}, {"root", agentwire.PartitionTypes["linux"]}}
	for i, w := range want {
		if p.Partitions[i].Name != w.name || p.Partitions[i].Type != w.typ || p.Partitions[i].Start%2048 != 0 {
			t.Errorf("partition %d: %+v, want %v", i, p.Partitions[i], w)
		}
	}
	if p.Partitions[2].UUID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("root uuid %s", p.Partitions[2].UUID)
	}
	if sgdisk, err := exec.LookPath("sgdisk"); err == nil {
		// sgdisk -v checks both headers, both arrays and their CRCs, and overlaps.
		out, err := exec.Command(sgdisk, "-v", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk -v: %v\n%s", err, out)
		}
	}
	// The old content of the first MiB is gone (beyond the table itself).
	b := make([]byte, 1<<20)
	if f, err := os.Open(path); err == nil {
		f.ReadAt(b, 0)
		f.Close()
	}
	if bytes.Contains(b, []byte{0xAA, 0xAA, 0xAA, 0xAA}) {
		t.Error("old data left in the first MiB")
	}
}

func TestPartitionRefusesImpossibleLayout(t *testing.T) {
	path := diskFile(t, 64<<20)
	err := partition(context.Background(), testEnv(t, &System{AllowRegularFiles: true}), Args{"disk": path, "partitions": []any{
		map[string]any{"label": "root", "size": "1G"},
	}})
	if err == nil || !errors.Is(err, errPermanent) || !strings.Contains(err.Error(), "disk has") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); b[0] != 0xAA {
		t.Error("a refused layout changed the disk")
	}
}

func FuzzReadGPT(f *testing.F) {
	l, _ := PlanGPT([]PartitionSpec{{Label: "a", Size: "1M"}, {Label: "b"}}, 8<<20, 512)
	var buf writerAtBuffer
	buf.b = make([]byte, 8<<20)
	l.Write(&buf)
	f.Add(buf.b[:34*512])
	f.Add(buf.b[512:1024])
	f.Fuzz(func(t *testing.T, data []byte) {
		disk := make([]byte, 64<<10)
		copy(disk, data)
		ReadGPT(bytes.NewReader(disk), int64(len(disk)), 512)
	})
}

type writerAtBuffer struct{ b []byte }

func (w *writerAtBuffer) WriteAt(p []byte, off int64) (int, error) {
	return copy(w.b[off:], p), nil
}
