package boot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/boot"
	"github.com/kilnhq/kiln/internal/image"
	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/testkit"
)

// TestBootApplications: the EFI applications Kiln serves a profile, by the
// Authenticode digest firmware measures into PCR 4 (what a TPM quote is checked
// against): the agent kernel for boot.agent, boot.kernel otherwise, and the UKI;
// a kernel that is not a PE image has none; a file that no longer matches its
// recorded sha256, or lacks the signature the server requires, is an error (never
// a digest to trust); a changed file is read again.
func TestBootApplications(t *testing.T) {
	testkit.NeedFiles(t, image.DefaultEFIStub, "/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	stub, err := os.ReadFile(image.DefaultEFIStub)
	if err != nil {
		t.Fatal(err)
	}
	loader, err := os.ReadFile("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	if err != nil {
		t.Fatal(err)
	}
	stubDigest, err := image.AuthenticodeSHA256(stub)
	if err != nil {
		t.Fatal(err)
	}
	loaderDigest, err := image.AuthenticodeSHA256(loader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"agent.efi": stub, "uki.efi": loader, "bzimage": []byte("a BIOS-only kernel, no MZ header")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kst := testkit.NewStore(t, `
kind: Artifact
metadata: {name: agent-kernel}
spec: {source: agent.efi}
---
kind: Artifact
metadata: {name: agent-uki}
spec: {source: uki.efi}
---
kind: Artifact
metadata: {name: bios-kernel}
spec: {source: bzimage}
`)
	b := &boot.Server{Inventory: kst.Inv, Artifacts: &boot.ArtifactStore{Dir: dir, Recorder: kst.Inv}, AgentKernel: "agent-kernel"}
	ctx := context.Background()
	apps := func(ps resource.ProfileSpec) (map[string]boot.BootApplication, error) {
		var out map[string]boot.BootApplication
		err := kst.Store.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = b.BootApplications(ctx, tx, &ps)
			return err
		})
		return out, err
	}

	got, err := apps(resource.ProfileSpec{Boot: resource.BootSpec{Agent: true, UKI: "agent-uki"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[stubDigest] != (boot.BootApplication{Artifact: "agent-kernel", Role: "kernel"}) || got[loaderDigest] != (boot.BootApplication{Artifact: "agent-uki", Role: "uki"}) {
		t.Fatalf("agent profile with a UKI: %+v, want the agent kernel %s and the UKI %s", got, stubDigest[:12], loaderDigest[:12])
	}
	if got, err := apps(resource.ProfileSpec{Boot: resource.BootSpec{Kernel: "bios-kernel"}}); err != nil || len(got) != 0 {
		t.Fatalf("a non-PE kernel: %+v, %v; want no application and no error", got, err)
	}
	if got, err := apps(resource.ProfileSpec{Boot: resource.BootSpec{Kernel: "agent-uki"}}); err != nil || got[loaderDigest].Role != "kernel" {
		t.Fatalf("boot.kernel: %+v, %v", got, err)
	}
	if _, err := apps(resource.ProfileSpec{Boot: resource.BootSpec{Kernel: "no-such-artifact"}}); err == nil {
		t.Fatal("a profile naming a missing artifact gave no error")
	}

	// Served once, the file's sha256 is recorded; a file changed since is refused.
	sum := sha256.Sum256(stub)
	if err := kst.Inv.RecordArtifactDigest(ctx, "agent-kernel", hex.EncodeToString(sum[:])); err != nil {
		t.Fatal(err)
	}
	changed := append([]byte(nil), stub...)
	changed[len(changed)/2] ^= 1
	if err := os.WriteFile(filepath.Join(dir, "agent.efi"), changed, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(dir, "agent.efi"), later, later)
	if got, err := apps(resource.ProfileSpec{Boot: resource.BootSpec{Agent: true}}); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("a kernel file changed after its sha256 was recorded: %+v, %v; want a digest mismatch", got, err)
	}

	// A server that requires signatures gives no digest of an unsigned kernel.
	pub, _ := minisignKey(t, t.TempDir(), "ops")
	signed := &boot.Server{Inventory: kst.Inv, Artifacts: &boot.ArtifactStore{Dir: dir, TrustedKeys: minisign.KeyRing{pub}}, AgentKernel: "agent-uki"}
	err = kst.Store.View(ctx, func(tx store.Tx) error {
		_, err := signed.BootApplications(ctx, tx, &resource.ProfileSpec{Boot: resource.BootSpec{Agent: true}})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("an unsigned kernel on a server that requires signatures: %v, want a signature error", err)
	}
}
