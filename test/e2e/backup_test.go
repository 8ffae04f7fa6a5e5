package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNetbootAfterBackupRestore: kiln backup of a running Kiln (DHCP on, a
// machine with a reserved address), the data dir wiped, kiln restore, kiln
// serve again: the machine's VM gets its reserved address from the restored
// Kiln and netboots, and the timeline from before the backup is still there.
// The operator keeps the admin token (a backup holds no token file).
func TestNetbootAfterBackupRestore(t *testing.T) {
	l := newLab(t)
	k := startKiln(t, l, kilnOptions{dhcp: true})
	const mac, ip, name = "52:54:00:e2:e0:0b", "10.77.0.31", "restored-1"
	k.apply(bootManifest("full") + machineManifest(name, mac, ip))
	before, err := k.events(name)
	if err != nil || len(before) == 0 {
		t.Fatalf("events before the backup: %v, %v", before, err)
	}
	token, err := os.ReadFile(filepath.Join(k.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}

	archive := filepath.Join(l.dir, "kiln-backup.tar.gz")
	if out, err := k.srv.Kiln("", "backup", "--out", archive, "--include-kek"); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	k.srv.Stop()
	if err := os.RemoveAll(k.dataDir); err != nil {
		t.Fatal(err)
	}
	out, err := k.srv.Kiln("", "restore", "--from", archive)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	t.Logf("kiln restore: %s", strings.TrimSpace(out))
	if err := os.WriteFile(filepath.Join(k.dataDir, "admin.token"), token, 0o600); err != nil {
		t.Fatal(err)
	}

	k = startKiln(t, l, kilnOptions{dhcp: true})
	v := startVM(t, l, vmConfig{Name: name, MAC: mac, Firmware: firmwareBIOS})
	steps := append([]step{{"DHCPAck", []string{ip}}}, netbootSteps(mac, "pcbios")...)
	evs := waitTimeline(t, k, v, name, steps, bootTimeout)
	if got := assertNetboot(t, v, name, evs, steps); got.String() != ip {
		t.Errorf("after the restore the kernel got %s by DHCP, want the machine's reserved %s", got, ip)
	}
	if len(evs) == 0 || !evs[0].Time.Equal(before[0].Time) || evs[0].Message != before[0].Message {
		t.Errorf("the timeline from before the backup is gone: first event now %v, was %v", evs[:min(1, len(evs))], before[0])
	}
}
