package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestReprovisionPowersOnThroughQMP: a lab VM that is off (QEMU started paused, its
// QMP socket as the machine's BMC) is powered on by `kiln machine reprovision`
// through the QEMU power driver: next boot set to the network, a power cycle; then it
// netboots from Kiln and phones home, and the power job is on its timeline first.
func TestReprovisionPowersOnThroughQMP(t *testing.T) {
	l := newLab(t)
	k := startKiln(t, l, kilnOptions{dhcp: true})
	const name, mac, ip = "lab-vm-1", "52:54:00:e2:e0:31", "10.77.0.31"
	qmp := filepath.Join(l.dir, name+".qmp")
	k.apply(bootManifest("full") + fmt.Sprintf(`---
kind: Template
metadata: {name: e2e-noop}
spec:
  actions:
    - {name: hello, type: exec, args: {command: "true"}}
---
kind: Machine
metadata: {name: %s}
spec:
  profile: %s
  interfaces: [{name: eth0, mac: "%s", ip: %s}]
  bmc: {driver: qemu, address: "unix://%s"}
`, name, profileName, mac, ip, qmp))

	// Off: QEMU holds the machine stopped before its first instruction (-S) until the
	// BMC (its QMP socket) says otherwise.
	v := startVM(t, l, vmConfig{Name: name, MAC: mac, Firmware: firmwareBIOS,
		Extra: []string{"-S", "-qmp", "unix:" + qmp + ",server=on,wait=off"}})

	cmd := l.nsCommand(context.Background(), testkit.KilnBinary(t), "--data-dir", k.dataDir, "machine", "reprovision", name, "--template", "e2e-noop")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "power job ") {
		t.Fatalf("kiln machine reprovision: %v\n%s", err, out)
	}
	t.Logf("kiln machine reprovision:\n%s", strings.TrimSpace(string(out)))
	steps := append([]step{
		{"WorkflowCreated", []string{"e2e-noop"}},
		{"PowerSucceeded", []string{"reprovision"}},
		{"DHCPAck", []string{ip}},
	}, netbootSteps(mac, "pcbios")...)
	evs := waitTimeline(t, k, v, name, steps, bootTimeout)
	assertNetboot(t, v, name, evs, steps)
}
