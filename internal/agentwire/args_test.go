package agentwire

import (
	"encoding/json"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	var a Args
	json.Unmarshal([]byte(`{"s":"x","n":42,"ns":"0x10","f":1.5,"b":true,"bs":"false","d":"90s","m":"0644","mn":420,"l":["a",1],"bad":{}}`), &a)
	if s, _ := a.String("s"); s != "x" {
		t.Error(s)
	}
	if _, err := a.Required("missing"); err == nil || err.Error() != "args.missing: required" {
		t.Error(err)
	}
	if n, _ := a.Int("n", 0); n != 42 {
		t.Error(n)
	}
	if n, _ := a.Int("ns", 0); n != 16 {
		t.Error(n)
	}
	if _, err := a.Int("f", 0); err == nil {
		t.Error("1.5 as an integer")
	}
	if b, _ := a.Bool("b", false); !b {
		t.Error(b)
	}
	if b, _ := a.Bool("bs", true); b {
		t.Error(b)
	}
	if d, _ := a.Duration("d", 0); d != 90*time.Second {
		t.Error(d)
	}
	if m, _ := a.Mode("m", 0); m != 0o644 {
		t.Errorf("%o", m)
	}
	if m, _ := a.Mode("mn", 0); m != 0o644 {
		t.Errorf("%o", m)
	}
	if l, _ := a.Strings("l"); len(l) != 2 || l[1] != "1" {
		t.Error(l)
	}
	if _, err := a.String("bad"); err == nil {
		t.Error("a map as a string")
	}
}
