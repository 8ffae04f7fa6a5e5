//go:build linux

package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestBackupRestoreKeepsDHCPReservation: kiln serve answers DHCP on one end of a
// veth pair; ISC dhclient in a network namespace of the test's own, on the other
// end, gets the address its Machine reserves. Backup (while serving), wipe,
// restore, serve again: the same client gets the same address, and the lease
// Kiln stored before the backup is there. Without the restored Machine the
// client would get a pool address (10.x.y.100 on), which the test would catch.
func TestBackupRestoreKeepsDHCPReservation(t *testing.T) {
	testkit.NeedRoot(t, "network namespaces, DHCP on port 67")
	testkit.NeedTool(t, "ip", "iproute2")
	testkit.NeedTool(t, "dhclient", "isc-dhcp-client")
	testkit.Slow(t, "starts kiln serve twice")

	id := crc32.ChecksumIEEE([]byte(t.Name()))%200 + 20
	pid := os.Getpid() % 1000
	ns := fmt.Sprintf("kiln-bkp-%d", pid)
	hostIf, nsIf := fmt.Sprintf("kbh%d", pid), fmt.Sprintf("kbc%d", pid)
	prefix := fmt.Sprintf("10.%d.%d", 200+pid%50, id)
	cleanup := func() {
		_ = exec.Command("ip", "netns", "del", ns).Run() // takes the pair with it
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	}
	cleanup()
	t.Cleanup(cleanup)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns},
		{"addr", "add", prefix + ".1/24", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", nsIf, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var links []struct {
		Address string `json:"address"`
	}
	out, err := exec.Command("ip", "-j", "-n", ns, "link", "show", nsIf).Output()
	if err != nil || json.Unmarshal(out, &links) != nil || len(links) != 1 {
		t.Fatalf("MAC of %s: %v %s", nsIf, err, out)
	}
	mac, reserved := links[0].Address, prefix+".21"

	dataDir := filepath.Join(t.TempDir(), "data")
	args := []string{"--dhcp-interface", hostIf}
	s := startServer(t, dataDir, nil, args...)
	admin := s.AdminToken
	s.MustKiln(fmt.Sprintf(`kind: Profile
metadata: {name: base}
spec: {boot: {agent: true}}
---
kind: Subnet
metadata: {name: lab}
spec: {cidr: %[1]s.0/24, pools: [{start: %[1]s.100, end: %[1]s.149}], bootServer: %[1]s.1, interfaces: [%[2]s]}
---
kind: Machine
metadata: {name: dhcp-1}
spec: {profile: base, interfaces: [{mac: '%[3]s', ip: %[4]s}]}
`, prefix, hostIf, mac, reserved), "apply", "-f", "-")

	if got := dhclientAddress(t, ns, nsIf); got != reserved {
		t.Fatalf("before the backup dhclient got %s, want the reservation %s", got, reserved)
	}
	leaseBefore := s.MustKiln("", "get", "lease", reserved, "-o", "json")

	archive := filepath.Join(t.TempDir(), "kiln.backup")
	s.MustKiln("", "backup", "--out", archive, "--include-kek")
	s.Stop()
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	s.MustKiln("", "restore", "--from", archive)
	if err := os.WriteFile(filepath.Join(dataDir, "admin.token"), []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, dataDir, nil, args...)
	if got := s2.MustKiln("", "get", "lease", reserved, "-o", "json"); !sameLease(t, got, leaseBefore) {
		t.Errorf("lease after the restore:\n%s\nbefore:\n%s", got, leaseBefore)
	}
	if got := dhclientAddress(t, ns, nsIf); got != reserved {
		t.Errorf("after the restore dhclient got %s, want the same reserved %s", got, reserved)
	}
}

// sameLease compares two leases' ip, mac and subnet (a renewal may have moved the
// expiry since).
func sameLease(t *testing.T, a, b string) bool {
	t.Helper()
	type lease struct {
		Spec struct{ IP, MAC, Subnet string }
	}
	var la, lb lease
	if json.Unmarshal([]byte(a), &la) != nil || json.Unmarshal([]byte(b), &lb) != nil {
		return false
	}
	return la.Spec.IP != "" && la.Spec == lb.Spec
}

// dhclientAddress runs ISC dhclient on iface in ns with a fresh lease file (so
// it asks for no remembered address) until it is bound, and returns the
// address it got; the client is stopped before it returns.
func dhclientAddress(t *testing.T, ns, iface string) string {
	t.Helper()
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	// Not Debian's dhclient-script: it would rewrite the host's /etc/resolv.conf.
	script := "#!/bin/sh\necho \"$reason $new_ip_address\" >> " + events + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "script"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf"), []byte("timeout 20;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "dhclient", "-4", "-d", "-v",
		"-cf", filepath.Join(dir, "conf"), "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"),
		"-sf", filepath.Join(dir, "script"), iface)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	for ctx.Err() == nil {
		b, _ := os.ReadFile(events)
		for _, line := range strings.Split(string(b), "\n") {
			if addr, ok := strings.CutPrefix(line, "BOUND "); ok {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dhclient was not bound within 30s:\n%s", out.String())
	return ""
}
