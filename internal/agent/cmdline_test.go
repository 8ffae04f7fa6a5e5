package agent

import (
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	c := ParseCmdline(`initrd=kiln-agent-initrd console=ttyS0 quiet kiln.server=https://10.0.0.2:8443 kiln.msg="a b  c" BOOTIF=01-52-54-00-12-34-56 kiln.shell` + "\n")
	want := map[string]string{"initrd": "kiln-agent-initrd", "console": "ttyS0", "quiet": "", "kiln.server": "https://10.0.0.2:8443",
		"kiln.msg": "a b  c", "BOOTIF": "01-52-54-00-12-34-56", "kiln.shell": ""}
	for k, v := range want {
		if got, ok := c[k]; !ok || got != v {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if len(c) != len(want) {
		t.Errorf("parsed %v", c)
	}
	for in, mac := range map[string]string{
		"BOOTIF=01-52-54-00-12-34-56": "52:54:00:12:34:56",
		"BOOTIF=01-AA-BB-CC-DD-EE-FF": "aa:bb:cc:dd:ee:ff",
		"BOOTIF=52:54:00:12:34:56":    "52:54:00:12:34:56",
		"BOOTIF=01-52-54-00":          "",
		"BOOTIF=":                     "",
		"nothing":                     "",
	} {
		if got := ParseCmdline(in).BootMAC(); got != mac {
			t.Errorf("%s: BootMAC %q, want %q", in, got, mac)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`console=ttyS0 kiln.server=https://x:8443 BOOTIF=01-52-54-00-12-34-56`)
	f.Add(`a="b c" "d=e f" g`)
	f.Add(`"`)
	f.Fuzz(func(t *testing.T, s string) {
		c := ParseCmdline(s)
		for k := range c {
			if k == "" || strings.ContainsAny(k, " \t\n") && !strings.Contains(s, `"`) {
				t.Fatalf("bad key %q from %q", k, s)
			}
		}
		if m := c.BootMAC(); m != "" && len(m) != 17 {
			t.Fatalf("BootMAC %q", m)
		}
	})
}
