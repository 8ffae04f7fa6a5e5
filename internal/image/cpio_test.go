package image

import (
	"bytes"
	"io"
	"io/fs"
	"testing"
)

func TestCPIORoundTrip(t *testing.T) {
	tr := NewTree()
	must(t, tr.File("init", 0o755, []byte("#!/bin/sh\n")))
	must(t, tr.File("etc/empty", 0o644, nil))
	must(t, tr.File("lib/modules/a.ko", 0o644, bytes.Repeat([]byte{1, 2, 3}, 1001)))
	must(t, tr.Symlink("bin/sh", "busybox"))
	must(t, tr.CharDevice("dev/console", 0o600, 5, 1))
	var a, b bytes.Buffer
	must(t, tr.WriteCPIO(&a, nil))
	must(t, tr.WriteCPIO(&b, nil))
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same tree wrote different bytes")
	}
	if a.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", a.Len())
	}
	cr := NewCPIOReader(&a)
	got := map[string]fs.FileMode{}
	var names []string
	for {
		h, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		got[h.Name] = h.FileMode()
		if h.Name == "lib/modules/a.ko" {
			d, _ := io.ReadAll(cr)
			if len(d) != 3003 {
				t.Errorf("a.ko: %d bytes", len(d))
			}
		}
	}
	want := []string{"bin", "bin/sh", "dev", "dev/console", "etc", "etc/empty", "init", "lib", "lib/modules", "lib/modules/a.ko"}
	if len(names) != len(want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %v, want %v", names, want)
		}
	}
	if got["bin/sh"]&fs.ModeSymlink == 0 || !got["bin"].IsDir() || got["dev/console"]&fs.ModeCharDevice == 0 || got["init"].Perm() != 0o755 {
		t.Errorf("modes: %v", got)
	}
}

func TestCPIOWriterChecksSizes(t *testing.T) {
	cw := NewCPIOWriter(io.Discard)
	must(t, cw.WriteHeader(&CPIOHeader{Name: "f", Mode: sIFREG | 0o644, Size: 2}))
	if _, err := cw.Write([]byte("abc")); err == nil {
		t.Error("wrote more than the header's size")
	}
	cw.Write([]byte("a"))
	if err := cw.WriteHeader(&CPIOHeader{Name: "g", Mode: sIFREG}); err == nil {
		t.Error("next header accepted while the previous entry is short")
	}
}

func FuzzCPIOReader(f *testing.F) {
	tr := NewTree()
	tr.File("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	tr.Symlink("bin/sh", "busybox")
	tr.CharDevice("dev/null", 0o666, 1, 3)
	var b bytes.Buffer
	tr.WriteCPIO(&b, nil)
	f.Add(b.Bytes())
	f.Add(b.Bytes()[:200])
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := NewCPIOReader(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			h, err := cr.Next()
			if err != nil {
				return
			}
			if h.Name == "" && len(data) > 0 {
				// an empty name is legal in the format; just don't crash
			}
			n, _ := io.Copy(io.Discard, cr)
			if n > h.Size {
				t.Fatalf("read %d bytes of a %d-byte entry", n, h.Size)
			}
		}
	})
}
