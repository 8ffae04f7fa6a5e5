package agentwire

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"512MiB": 512 << 20, "20G": 20 << 30, "1.5T": 3 << 39, "1GB": 1e9, "4096": 4096, "2048s": 1 << 20, "100k": 100 << 10} {
		got, rest, err := ParseSize(in)
		if err != nil || rest || got != want {
			t.Errorf("%s = %d, %v, %v; want %d", in, got, rest, err, want)
		}
	}
	for _, in := range []string{"", "rest", "*", "100%"} {
		if _, rest, err := ParseSize(in); !rest || err != nil {
			t.Errorf("%q is not rest", in)
		}
	}
	for _, in := range []string{"-1G", "0", "12X", "G", "1e400"} {
		if _, _, err := ParseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestGUIDText(t *testing.T) {
	g, err := ParseGUID(PartitionTypes["linux"])
	if err != nil || g.String() != PartitionTypes["linux"] {
		t.Fatalf("%v %v", g, err)
	}
	// On disk, the first three fields are little-endian.
	if g[0] != 0xAF || g[3] != 0x0F || g[8] != 0x8E {
		t.Errorf("bytes % x", g[:])
	}
	if _, err := ParseGUID("0FC63DAF84834772-8E79-3D69D8477DE4xx"); err == nil {
		t.Error("malformed GUID accepted")
	}
}
