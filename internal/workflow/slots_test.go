package workflow_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/verity"
	"github.com/kilnhq/kiln/internal/workflow"
)

// slotManifests are artifacts signed for real (internal/verity/testdata: openssl
// smime over the root hash ab01...ab01), templates trusting that key or another.
func slotManifests(t *testing.T) string {
	sig, err := os.ReadFile("../verity/testdata/roothash-noattr.p7s")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile("../verity/testdata/signer.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "another key"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	other := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	indent := func(b []byte) string {
		return "          " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n          ")
	}
	return strings.NewReplacer("SIG", base64.StdEncoding.EncodeToString(sig), "TRUSTED", indent(cert), "OTHER", indent(other)).Replace(slotManifestsText)
}

const slotManifestsText = `
kind: Artifact
metadata: {name: os-v1-verity}
spec: {source: images/os-v1.verity, sha256: "1111111111111111111111111111111111111111111111111111111111111111"}
---
kind: Artifact
metadata: {name: os-v1}
spec:
  source: images/os-v1.raw
  sha256: "2222222222222222222222222222222222222222222222222222222222222222"
  verity: {hashTree: os-v1-verity, rootHash: "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01", rootHashSignature: "SIG"}
---
kind: Artifact
metadata: {name: os-v2}
spec:
  source: images/os-v2.raw
  sha256: "4444444444444444444444444444444444444444444444444444444444444444"
  verity: {hashTree: os-v1-verity, rootHash: "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01", rootHashSignature: "SIG"}
---
kind: Artifact
metadata: {name: os-forged}
spec:
  source: images/os-forged.raw
  sha256: "5555555555555555555555555555555555555555555555555555555555555555"
  verity: {hashTree: os-v1-verity, rootHash: "cd01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01", rootHashSignature: "SIG"}
---
kind: Artifact
metadata: {name: os-plain}
spec: {source: images/plain.raw, sha256: "6666666666666666666666666666666666666666666666666666666666666666"}
---
kind: Template
metadata: {name: ab}
spec:
  actions:
    - name: layout
      type: partition
      args: {disk: /dev/vda, partitions: [{label: esp, size: 64MiB, type: esp}, {label: root-a, size: 1G}, {label: root-a-verity, size: 16MiB}, {label: root-b, size: 1G}, {label: root-b-verity, size: 16MiB}]}
    - name: slot
      type: image2slot
      args:
        disk: /dev/vda
        image: os-v1
        linux: /vmlinuz
        bootDeadline: 10m
        trustedCerts: |
TRUSTED
    - name: reboot
      type: reboot
---
kind: Template
metadata: {name: ab-other-key}
spec:
  actions:
    - name: slot
      type: image2slot
      args:
        disk: /dev/vda
        image: os-v1
        linux: /vmlinuz
        trustedCerts: |
OTHER
---
kind: Template
metadata: {name: no-slot}
spec:
  actions:
    - {name: reboot, type: reboot}
---
kind: Profile
metadata: {name: ab}
spec: {boot: {agent: true}, workflow: ab}
---
kind: Machine
metadata: {name: ab-1}
spec: {profile: ab, interfaces: [{mac: "52:54:00:00:0a:01"}]}
`

type slotEnv struct {
	t   *testing.T
	eng *workflow.Engine
	st  store.Store
	now time.Time
}

func (e *slotEnv) run(wf *resource.Object) {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.eng.Fetch(ctx, "ab-1"); err != nil {
		e.t.Fatal(err)
	}
	st, _ := workflow.StatusOf(wf)
	for _, a := range st.Actions {
		e.now = e.now.Add(time.Second)
		if _, err := e.eng.Apply(ctx, "ab-1", wf.Metadata.Name, a.Name, workflow.Report{State: workflow.Succeeded}); err != nil {
			e.t.Fatalf("report %s: %v", a.Name, err)
		}
	}
}

func (e *slotEnv) status() resource.MachineStatus {
	e.t.Helper()
	var m *resource.Object
	e.st.View(context.Background(), func(tx store.Tx) error {
		var err error
		m, err = tx.Get(context.Background(), "Machine", "ab-1")
		return err
	})
	var ms resource.MachineStatus
	json.Unmarshal(m.Status, &ms)
	return ms
}

func (e *slotEnv) lastEvent() store.Event {
	e.t.Helper()
	var evs []store.Event
	e.st.View(context.Background(), func(tx store.Tx) error {
		var err error
		evs, err = tx.ListEvents(context.Background(), "ab-1", 100)
		return err
	})
	if len(evs) == 0 {
		e.t.Fatal("no events")
	}
	return evs[len(evs)-1]
}

// TestSlotInstallUpgradeRollback: the install writes slot a with the image's
// verity arguments rendered; an upgrade runs only the image2slot and reboot
// actions, on slot b, with the new image; the machine phoning home from b makes
// it the slot (previous a); an upgrade to a that comes back on b is a rollback,
// counted, audited and on the timeline; a deadline passing first is an event.
func TestSlotInstallUpgradeRollback(t *testing.T) {
	ts := testkit.NewStore(t, slotManifests(t))
	e := &slotEnv{t: t, st: ts.Store, now: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)}
	e.eng = &workflow.Engine{Store: ts.Store, Now: func() time.Time { return e.now }, ArtifactURL: func(n string) string { return "/artifacts/" + n }}
	ctx := context.Background()

	wf, err := e.eng.Start(ctx, "token:op", "ab-1", "")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := workflow.StatusOf(wf)
	got := st.Actions[1].Args
	for k, want := range map[string]any{"slot": "a", "version": "os-v1", "imageURL": "/artifacts/os-v1",
		"sha256":    "2222222222222222222222222222222222222222222222222222222222222222",
		"verityURL": "/artifacts/os-v1-verity", "veritySHA256": "1111111111111111111111111111111111111111111111111111111111111111",
		"rootHash": "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01"} {
		if got[k] != want {
			t.Errorf("install: args.%s = %v, want %v", k, got[k], want)
		}
	}
	e.run(wf)
	up := e.status().SlotUpgrade
	if up == nil || up.Slot != "a" || up.Version != "os-v1" || up.Deadline == nil || up.Deadline.Sub(e.now) > 10*time.Minute || up.Deadline.Sub(e.now) < 9*time.Minute {
		t.Fatalf("after install: slotUpgrade %+v, want slot a os-v1 with the 10m deadline", up)
	}
	if err := e.eng.SlotBooted(ctx, "ab-1", "a", "os-v1"); err != nil {
		t.Fatal(err)
	}
	if s := e.status(); s.Slot != "a" || s.SlotVersion != "os-v1" || s.SlotUpgrade != nil || s.State != resource.StateProvisioned {
		t.Fatalf("after slot a booted: %+v", s)
	}

	wf, err = e.eng.Upgrade(ctx, "token:op", "ab-1", "os-v2", "")
	if err != nil {
		t.Fatal(err)
	}
	st, _ = workflow.StatusOf(wf)
	if len(st.Actions) != 2 || st.Actions[0].Type != "image2slot" || st.Actions[1].Type != "reboot" {
		t.Fatalf("upgrade actions %+v, want image2slot and reboot only", st.Actions)
	}
	if a := st.Actions[0].Args; a["slot"] != "b" || a["image"] != "os-v2" || a["version"] != "os-v2" || a["rootHash"] != "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01" {
		t.Fatalf("upgrade args %v, want slot b and os-v2's", a)
	}
	if n := len(testkit.AuditEntries(t, ts.Store, "upgrade")); n != 1 {
		t.Errorf("%d upgrade audit entries, want 1", n)
	}
	e.run(wf)
	if err := e.eng.SlotBooted(ctx, "ab-1", "b", "os-v2"); err != nil {
		t.Fatal(err)
	}
	if s := e.status(); s.Slot != "b" || s.PreviousSlot != "a" || s.SlotVersion != "os-v2" || s.Rollbacks != 0 {
		t.Fatalf("after the upgrade to b: %+v", s)
	}
	if ev := e.lastEvent(); ev.Type != "SlotBooted" || !strings.Contains(ev.Message, "booted slot b (os-v2)") || !strings.Contains(ev.Message, "previous slot a (os-v1)") {
		t.Errorf("event %s %q", ev.Type, ev.Message)
	}

	// The broken upgrade: slot a, which never phones home; the deadline passes;
	// systemd-boot falls back and b phones home.
	wf, err = e.eng.Upgrade(ctx, "token:op", "ab-1", "os-v1", "ab")
	if err != nil {
		t.Fatal(err)
	}
	e.run(wf)
	e.now = e.now.Add(11 * time.Minute)
	if late, err := e.eng.SweepSlotDeadlines(ctx); err != nil || len(late) != 1 || late[0] != "ab-1" {
		t.Fatalf("sweep: %v, %v; want ab-1", late, err)
	}
	if ev := e.lastEvent(); ev.Type != "SlotDeadline" || !strings.Contains(ev.Message, "slot a (os-v1) did not phone home within 10m0s") {
		t.Errorf("event %s %q", ev.Type, ev.Message)
	}
	if late, _ := e.eng.SweepSlotDeadlines(ctx); len(late) != 0 {
		t.Errorf("second sweep found %v: the deadline is reported once", late)
	}
	if err := e.eng.SlotBooted(ctx, "ab-1", "b", "os-v2"); err != nil {
		t.Fatal(err)
	}
	s := e.status()
	if s.Slot != "b" || s.SlotVersion != "os-v2" || s.Rollbacks != 1 || s.SlotUpgrade != nil || s.PreviousSlot != "a" {
		t.Fatalf("after the rollback: %+v", s)
	}
	if ev := e.lastEvent(); ev.Type != "SlotRollback" || !strings.Contains(ev.Message, "upgrade to slot a (os-v1") || !strings.Contains(ev.Message, "fell back to slot b (os-v2); rollback 1") {
		t.Errorf("event %s %q", ev.Type, ev.Message)
	}
	if n := len(testkit.AuditEntries(t, ts.Store, "slot-rollback")); n != 1 {
		t.Errorf("%d slot-rollback audit entries, want 1", n)
	}
	// An ordinary reboot of b later changes nothing and adds no event.
	before := e.lastEvent()
	if err := e.eng.SlotBooted(ctx, "ab-1", "b", "os-v2"); err != nil || e.lastEvent() != before {
		t.Errorf("a plain reboot: %v, event %v", err, e.lastEvent())
	}
}

// TestUpgradeRefusals: an image without verity, a template without image2slot,
// an unknown image, a signature by a key the template does not trust, a
// signature of another root hash, a bad slot report: nothing starts.
func TestUpgradeRefusals(t *testing.T) {
	ts := testkit.NewStore(t, slotManifests(t))
	eng := &workflow.Engine{Store: ts.Store}
	ctx := context.Background()
	if _, err := eng.Upgrade(ctx, "t", "ab-1", "os-plain", ""); err == nil || !strings.Contains(err.Error(), `artifact "os-plain" has no spec.verity`) {
		t.Errorf("plain image: %v", err)
	}
	if _, err := eng.Upgrade(ctx, "t", "ab-1", "os-v2", "no-slot"); !errors.Is(err, workflow.ErrNoSlotAction) {
		t.Errorf("template without image2slot: %v", err)
	}
	if _, err := eng.Upgrade(ctx, "t", "ab-1", "nope", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown image: %v", err)
	}
	if _, err := eng.Upgrade(ctx, "t", "ab-1", "os-v2", "ab-other-key"); !errors.Is(err, verity.ErrUnknownSigner) || !strings.Contains(err.Error(), `image "os-v2": spec.verity.rootHashSignature is not trusted by action "slot"'s trustedCerts`) {
		t.Errorf("signed by a key the template does not trust: %v", err)
	}
	if _, err := eng.Upgrade(ctx, "t", "ab-1", "os-forged", ""); err == nil || !strings.Contains(err.Error(), `image "os-forged"`) {
		t.Errorf("a signature of another root hash: %v", err)
	}
	if err := eng.SlotBooted(ctx, "ab-1", "c", "x"); err == nil {
		t.Errorf("slot c accepted")
	}
	if n := len(testkit.AuditEntries(t, ts.Store, "upgrade")); n != 0 {
		t.Errorf("refused upgrades audited as done: %d", n)
	}
}

func TestParseSlotReport(t *testing.T) {
	cases := []struct{ msg, slot, version string }{
		{"52:54:00:00:0a:01 phoned home from 10.0.0.5: booted kiln.slot=b kiln.version=os-v2", "b", "os-v2"},
		{"up slot=a version=1.2.3+git", "a", "1.2.3+git"},
		{"booted+from+disk+slot=a+version=v1", "a", "v1"},
		{"slot=c version=v1", "", ""},
		{"myslot=a", "", ""},
		{"no slot here", "", ""},
	}
	for _, c := range cases {
		slot, version, ok := workflow.ParseSlotReport(c.msg)
		if ok != (c.slot != "") || slot != c.slot || version != c.version {
			t.Errorf("ParseSlotReport(%q) = %q %q %v, want %q %q", c.msg, slot, version, ok, c.slot, c.version)
		}
	}
}

// FuzzParseSlotReport: a phone-home message is anyone's text; what it yields is a
// slot a or b and a version fit for a status field, or nothing.
func FuzzParseSlotReport(f *testing.F) {
	f.Add("52:54:00:00:0a:01 phoned home from 10.0.0.5: booted kiln.slot=b kiln.version=os-v2")
	f.Add("slot=a version=1.2.3+git")
	f.Add("slot=a&version=" + strings.Repeat("x", 70))
	versionOK := regexp.MustCompile(`^[A-Za-z0-9._+~-]{0,64}$`)
	f.Fuzz(func(t *testing.T, msg string) {
		slot, version, ok := workflow.ParseSlotReport(msg)
		if !ok {
			if slot != "" || version != "" {
				t.Fatalf("not ok but %q %q", slot, version)
			}
			return
		}
		if slot != "a" && slot != "b" || !versionOK.MatchString(version) {
			t.Fatalf("ParseSlotReport(%q) = %q %q", msg, slot, version)
		}
	})
}
