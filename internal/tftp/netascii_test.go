package tftp

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// fromNetascii is the receiving side's conversion (CR LF -> LF, CR NUL -> CR),
// as tftp-hpa's client does it; used to check round trips.
func fromNetascii(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] == '\r' && i+1 < len(b) && (b[i+1] == '\n' || b[i+1] == 0) {
			if b[i+1] == '\n' {
				out = append(out, '\n')
			} else {
				out = append(out, '\r')
			}
			i++
			continue
		}
		out = append(out, b[i])
	}
	return out
}

func TestNetascii(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{"a\nb", "a\r\nb"},
		{"\n", "\r\n"},
		{"\r", "\r\x00"},
		{"a\r\nb", "a\r\x00\r\nb"},
		{"\n\n\r\r", "\r\n\r\n\r\x00\r\x00"},
		{"x\x00y", "x\x00y"},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tt := range tests {
		for name, wrap := range readers {
			got, err := io.ReadAll(wrap(newNetasciiReader(bytes.NewReader([]byte(tt.in)))))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("%s: netascii(%q) = %q, want %q", name, tt.in, got, tt.want)
			}
		}
	}
	// Reads of exactly one byte must carry the second half of an expansion
	// over to the next Read.
	r := newNetasciiReader(iotest.OneByteReader(bytes.NewReader([]byte("a\nb\r"))))
	var out []byte
	p := make([]byte, 1)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(out) != "a\r\nb\r\x00" {
		t.Errorf("1-byte reads: %q", out)
	}
	if err := iotest.TestReader(newNetasciiReader(bytes.NewReader([]byte("l1\nl2\r\n"))), []byte("l1\r\nl2\r\x00\r\n")); err != nil {
		t.Error(err)
	}
}

func FuzzNetascii(f *testing.F) {
	for _, s := range []string{"", "a\nb", "\r\n", "\r\r\n\n\x00", "plain"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := io.ReadAll(iotest.HalfReader(newNetasciiReader(bytes.NewReader(in))))
		if err != nil {
			t.Fatal(err)
		}
		if back := fromNetascii(got); !bytes.Equal(back, in) {
			t.Fatalf("round trip %q -> %q -> %q", in, got, back)
		}
		for i, c := range got {
			if c == '\r' && (i+1 == len(got) || (got[i+1] != '\n' && got[i+1] != 0)) {
				t.Fatalf("bare CR in netascii output %q", got)
			}
			if c == '\n' && (i == 0 || got[i-1] != '\r') {
				t.Fatalf("bare LF in netascii output %q", got)
			}
		}
	})
}
