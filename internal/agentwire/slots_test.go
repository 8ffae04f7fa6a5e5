package agentwire

import (
	"strings"
	"testing"
)

// abLayout is an A/B layout with the given sizes of root and verity partitions.
func abLayout(rootA, verA, rootB, verB string, extra ...map[string]any) []any {
	l := []any{
		map[string]any{"label": "esp", "size": "64MiB", "type": "esp"},
		map[string]any{"label": "root-a", "size": rootA},
		map[string]any{"label": "root-a-verity", "size": verA},
		map[string]any{"label": "root-b", "size": rootB},
		map[string]any{"label": "root-b-verity", "size": verB},
	}
	for _, e := range extra {
		l = append(l, e)
	}
	return l
}

// TestCheckSlotLayout: an A/B layout is refused at apply, naming the field, when a
// slot partition is missing, the slots differ, a verity partition cannot hold its
// tree, there is no ESP, or it does not fit the disk the template declares.
func TestCheckSlotLayout(t *testing.T) {
	data := map[string]any{"label": "data", "size": "rest"}
	cases := []struct {
		name string
		args map[string]any
		want string
	}{
		{"ok", map[string]any{"disk": "/dev/vda", "partitions": abLayout("1G", "16MiB", "1G", "16MiB", data)}, ""},
		{"ok on its declared disk", map[string]any{"disk": map[string]any{"minSize": "3G"}, "partitions": abLayout("1G", "16MiB", "1G", "16MiB", data)}, ""},
		{"not A/B", map[string]any{"disk": "/dev/vda", "partitions": []any{map[string]any{"label": "root", "size": "rest"}}}, ""},
		{"missing verity", map[string]any{"disk": "/dev/vda", "partitions": abLayout("1G", "16MiB", "1G", "16MiB")[:4]}, `no partition labelled "root-b-verity"`},
		{"no ESP", map[string]any{"disk": "/dev/vda", "partitions": abLayout("1G", "16MiB", "1G", "16MiB")[1:]}, "needs an ESP"},
		{"slots differ", map[string]any{"disk": "/dev/vda", "partitions": abLayout("1G", "32MiB", "2G", "32MiB")}, `partitions[3].size: "root-b" is 2.00 GiB but "root-a" is 1.00 GiB`},
		{"verity too small", map[string]any{"disk": "/dev/vda", "partitions": abLayout("1G", "1MiB", "1G", "1MiB")}, `partitions[2].size: 1.0 MiB of "root-a-verity" cannot hold the hash tree of "root-a" (1.00 GiB needs 8.1 MiB)`},
		{"slot takes the rest", map[string]any{"disk": "/dev/vda", "partitions": abLayout("rest", "16MiB", "1G", "16MiB")}, "partitions[1].size: slot partition \"root-a\" cannot take the rest"},
		{"does not fit selector minSize", map[string]any{"disk": map[string]any{"minSize": "2G"}, "partitions": abLayout("1G", "16MiB", "1G", "16MiB", data)}, "partitions: does not fit the 2.00 GiB disk (args.disk.minSize)"},
		{"does not fit minDiskSize", map[string]any{"disk": "/dev/vda", "minDiskSize": "1G", "partitions": abLayout("1G", "16MiB", "1G", "16MiB")}, "partitions: does not fit the 1.00 GiB disk (args.minDiskSize)"},
		{"bad minDiskSize", map[string]any{"disk": "/dev/vda", "minDiskSize": "rest", "partitions": abLayout("1G", "16MiB", "1G", "16MiB")}, "args.minDiskSize"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckActions([]Action{{Name: "disk", Type: "partition", Args: c.args}})
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "spec.actions[0] (disk).args") {
				t.Fatalf("got %v, want spec.actions[0] (disk).args... %q", err, c.want)
			}
		})
	}
}

const testCertPEM = `-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUNN3pS0lTCXvHL0w4ruYnlVj9bRgwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTa2lsbi12ZXJpdHktYWd0ZXN0MB4XDTI2MTIwNzA1NDAwMFoX
DTM2MTIwNDA1NDAwMFowHjEcMBoGA1UEAwwTa2lsbi12ZXJpdHktYWd0ZXN0MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
-----END CERTIFICATE-----
`

// TestCheckImage2Slot: image2slot's arguments that can never work are refused at
// apply, naming the field; a private key pasted as trustedCerts is refused
// without being echoed.
func TestCheckImage2Slot(t *testing.T) {
	base := func(kv ...any) map[string]any {
		m := map[string]any{"disk": "/dev/vda", "image": "os-v2", "trustedCerts": "{{ .Profile }}"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		args map[string]any
		want string
	}{
		{"templated certs left to render", base(), ""},
		{"no certs", map[string]any{"disk": "/dev/vda", "image": "os"}, "args.trustedCerts: required by image2slot"},
		{"no image", map[string]any{"disk": "/dev/vda", "trustedCerts": "x"}, "args.image: required by image2slot"},
		{"bad slot", base("slot", "c"), `args.slot: "c" is not a or b`},
		{"not PEM", base("trustedCerts", "hello"), "args.trustedCerts: no PEM CERTIFICATE"},
		{"a private key", base("trustedCerts", "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"), "args.trustedCerts: PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"},
		{"broken certificate", base("trustedCerts", testCertPEM), "args.trustedCerts: certificate 1:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckActions([]Action{{Name: "slot", Type: "image2slot", Args: c.args}})
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("the error echoes the key: %v", err)
			}
		})
	}
}
