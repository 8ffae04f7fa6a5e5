package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kilnhq/kiln/internal/image"
	"github.com/kilnhq/kiln/internal/minisign"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// maxPEArtifact bounds a kernel or UKI read whole to compute its Authenticode
// digest (a distribution kernel is about 10 MiB, a UKI with its initrd under 200).
const maxPEArtifact = 512 << 20

// BootApplication is an EFI application Kiln serves a profile's machines: the
// digest UEFI firmware measures into PCR 4 when it starts it.
type BootApplication struct {
	// Artifact is the artifact's name; Role is "kernel" or "uki".
	Artifact, Role string
}

// BootApplications returns, by Authenticode SHA-256 (hex), the EFI applications
// Kiln serves machines of profile ps: its kernel (the agent's kernel for
// boot.agent) when that is a PE image (an EFI stub kernel), and its UKI. A quote
// whose log shows the firmware starting anything else as the last boot application
// did not boot what Kiln served. It reads artifacts through tx and the files
// without writing to the store (it runs inside an enrollment's transaction).
// Artifacts with a remote source are left out unless Kiln holds a verified copy;
// an artifact that is not a PE image (a BIOS-only bzImage) has no such digest.
func (s *Server) BootApplications(ctx context.Context, tx store.Tx, ps *resource.ProfileSpec) (map[string]BootApplication, error) {
	out := map[string]BootApplication{}
	add := func(name, role string) error {
		if name == "" {
			return nil
		}
		d, err := s.Artifacts.authenticode(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("%s artifact %s: %w", role, name, err)
		}
		if d != "" {
			out[d] = BootApplication{Artifact: name, Role: role}
		}
		return nil
	}
	kernel := ps.Boot.Kernel
	if ps.Boot.Agent {
		kernel = s.AgentKernel
	}
	if err := add(kernel, "kernel"); err != nil {
		return nil, err
	}
	if err := add(string(ps.Boot.UKI), "uki"); err != nil {
		return nil, err
	}
	return out, nil
}

// authenticode returns the Authenticode SHA-256 of artifact name's verified file
// ("" when it is not a PE image or is a remote artifact not fetched yet). The
// file is checked as open checks it (recorded sha256, signature) but nothing is
// recorded; results are cached by the file's identity and digest.
func (a *ArtifactStore) authenticode(ctx context.Context, tx store.Tx, name string) (string, error) {
	obj, err := tx.Get(ctx, "Artifact", name)
	if err != nil {
		return "", err
	}
	spec, err := resource.Typed[resource.ArtifactSpec](obj)
	if err != nil {
		return "", err
	}
	src := spec.Source
	want := expectedSHA256(obj, spec)
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		if want == "" {
			a.mu.Lock()
			want = a.fetched[src]
			a.mu.Unlock()
		}
		if want == "" {
			return "", nil // never fetched: no machine booted it from this server
		}
		src = cachedCopy(want).Source
		if _, err := os.Stat(filepath.Join(a.Dir, src)); errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
	}
	f, err := a.openLocal(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("source %q is not a regular file", src)
	}
	key := peKey{name: name, size: st.Size(), mtime: st.ModTime().UnixNano(), want: want, signature: spec.Signature}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		key.ino = sys.Ino
	}
	a.mu.Lock()
	d, ok := a.peDigests[key]
	a.mu.Unlock()
	if ok {
		return d, nil
	}
	if st.Size() > maxPEArtifact {
		return "", fmt.Errorf("larger than %d bytes", maxPEArtifact)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEArtifact+1))
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	if sum := hex.EncodeToString(h[:]); want != "" && sum != want {
		return "", fmt.Errorf("%w: %s has sha256 %s, recorded %s", ErrDigestMismatch, src, sum, want)
	}
	if a.needsSignature(spec) {
		var b2 hash.Hash = minisign.NewHash()
		b2.Write(b)
		if err := a.checkSignature(spec, b2.Sum(nil)); err != nil {
			return "", err
		}
	}
	d, err = image.AuthenticodeSHA256(b)
	if err != nil {
		d = "" // not a PE image: nothing the firmware measures as an application
	}
	a.mu.Lock()
	if a.peDigests == nil {
		a.peDigests = map[peKey]string{}
	}
	a.peDigests[key] = d
	a.mu.Unlock()
	return d, nil
}

// peKey identifies the file content an Authenticode digest was computed from.
type peKey struct {
	name, want, signature string
	size, mtime           int64
	ino                   uint64
}
