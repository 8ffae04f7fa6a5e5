// Package ociimage builds Kiln's container image as an OCI image layout (a
// directory that skopeo, umoci, podman, containerd and registries read) without a
// container daemon: one reproducible layer holding the static kiln binary, a
// non-root user, /etc/kiln and /var/lib/kiln, with a config and manifest whose every
// timestamp is fixed, so that two builds from the same inputs are byte-identical.
//
// Why in Go rather than umoci or buildah: umoci repack records the build host's
// file times and its own history entry, and buildah needs a storage driver and
// (in practice) root; neither gives byte-identical output without post-processing.
// An image of one static binary is a tar and three JSON documents, which the
// standard library writes exactly.
package ociimage

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Media types of the OCI image specification v1.1.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// UID and GID of the kiln user in the image: 65532, the "nonroot" id distroless
// images use, so that a Kubernetes runAsNonRoot check passes and host files are
// not accidentally owned by a real host account.
const (
	UID = 65532
	GID = 65532
)

// DataDir is Kiln's state directory in the image, owned by the kiln user.
const DataDir = "/var/lib/kiln"

// Options are the inputs of a build; equal Options give byte-identical layouts.
type Options struct {
	// Binary is the static kiln binary (CGO_ENABLED=0): the image has no libc.
	Binary string
	// CABundle is a PEM bundle of public CAs, installed as
	// /etc/ssl/certs/ca-certificates.crt for https artifact sources; "" for none.
	CABundle string
	// Version and Revision label the image (org.opencontainers.image.version and
	// .revision); Created is every timestamp in it (the commit's time, for example).
	Version, Revision string
	Created           time.Time
	// Arch is the binary's GOARCH (amd64, arm64).
	Arch string
	// Tag names the image in index.json (org.opencontainers.image.ref.name).
	Tag string
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is an index entry's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// ImageConfig is the part of the config the runtime uses.
type ImageConfig struct {
	User         string              `json:"User"`
	Env          []string            `json:"Env"`
	Entrypoint   []string            `json:"Entrypoint"`
	Cmd          []string            `json:"Cmd"`
	WorkingDir   string              `json:"WorkingDir"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	Volumes      map[string]struct{} `json:"Volumes"`
	Labels       map[string]string   `json:"Labels"`
	StopSignal   string              `json:"StopSignal"`
}

// Config is the image configuration document.
type Config struct {
	Created      string      `json:"created"`
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       ImageConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	} `json:"history"`
}

// Manifest is the image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is index.json.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Ports the image declares: what `kiln serve` listens on by default. DHCP (67,
// and 4011 for proxy PXE) and TFTP (69) need the host's network to see broadcasts
// and CAP_NET_BIND_SERVICE (plus CAP_NET_RAW for SO_BINDTODEVICE) as a non-root user.
var exposedPorts = []string{"8080/tcp", "8443/tcp", "67/udp", "69/udp", "4011/udp"}

// Build writes the OCI layout into dir (created; it must not hold another layout)
// and returns the manifest's descriptor.
func Build(dir string, opts Options) (Descriptor, error) {
	if opts.Binary == "" || opts.Arch == "" || opts.Tag == "" {
		return Descriptor{}, errors.New("image: Binary, Arch and Tag are required")
	}
	created := opts.Created.UTC().Truncate(time.Second)
	layer, diffID, err := rootfsLayer(opts, created)
	if err != nil {
		return Descriptor{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return Descriptor{}, fmt.Errorf("image: create layout %s: %w", dir, err)
	}
	layerDesc, err := writeBlob(dir, MediaTypeLayerGz, layer)
	if err != nil {
		return Descriptor{}, err
	}
	cfg := imageConfig(opts, created, diffID)
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return Descriptor{}, fmt.Errorf("image: encode config: %w", err)
	}
	cfgDesc, err := writeBlob(dir, MediaTypeConfig, cfgJSON)
	if err != nil {
		return Descriptor{}, err
	}
	m := Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfgDesc, Layers: []Descriptor{layerDesc}}
	mJSON, err := json.Marshal(m)
	if err != nil {
		return Descriptor{}, fmt.Errorf("image: encode manifest: %w", err)
	}
	mDesc, err := writeBlob(dir, MediaTypeManifest, mJSON)
	if err != nil {
		return Descriptor{}, err
	}
	mDesc.Annotations = map[string]string{"org.opencontainers.image.ref.name": opts.Tag}
	mDesc.Platform = &Platform{Architecture: opts.Arch, OS: "linux"}
	idx, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{mDesc}})
	if err != nil {
		return Descriptor{}, fmt.Errorf("image: encode index: %w", err)
	}
	for name, data := range map[string][]byte{
		"index.json": idx,
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return Descriptor{}, fmt.Errorf("image: write %s: %w", name, err)
		}
	}
	return mDesc, nil
}

func imageConfig(opts Options, created time.Time, diffID string) Config {
	ts := created.Format(time.RFC3339)
	c := Config{Created: ts, Architecture: opts.Arch, OS: "linux"}
	c.Config = ImageConfig{
		User:       strconv.Itoa(UID) + ":" + strconv.Itoa(GID),
		Env:        []string{"PATH=/usr/bin", "KILN_DATA_DIR=" + DataDir},
		Entrypoint: []string{"/usr/bin/kiln"},
		Cmd:        []string{"serve"},
		WorkingDir: DataDir,
		// SIGTERM is what kiln serve shuts down gracefully on.
		StopSignal:   "SIGTERM",
		ExposedPorts: map[string]struct{}{},
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "kiln",
			"org.opencontainers.image.description": "Kiln: network boot and server provisioning (DHCP, TFTP, iPXE/HTTP boot, enrollment, workflows)",
			"org.opencontainers.image.source":      "https://github.com/kilnhq/kiln",
			"org.opencontainers.image.url":         "https://github.com/kilnhq/kiln",
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.version":     opts.Version,
			"org.opencontainers.image.revision":    opts.Revision,
			"org.opencontainers.image.created":     ts,
		},
	}
	for _, p := range exposedPorts {
		c.Config.ExposedPorts[p] = struct{}{}
	}
	c.RootFS.Type = "layers"
	c.RootFS.DiffIDs = []string{diffID}
	c.History = append(c.History, struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	}{ts, "kiln tools/ociimage (static binary, /etc/passwd with kiln 65532, /etc/kiln, /var/lib/kiln)"})
	return c
}

// entry is one file of the layer.
type entry struct {
	name     string
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// rootfsLayer returns the gzip-compressed layer and the digest of its tar (the
// diff ID). Entries are in a fixed order with fixed owners and times.
func rootfsLayer(opts Options, created time.Time) ([]byte, string, error) {
	bin, err := os.ReadFile(opts.Binary)
	if err != nil {
		return nil, "", fmt.Errorf("image: read the kiln binary: %w", err)
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nkiln:x:" + strconv.Itoa(GID) + ":\n")},
		{name: "etc/kiln/", mode: 0o755, dir: true},
		// The Go resolver reads it; without it lookups still work, with it they
		// follow the usual order.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nkiln:x:" +
			strconv.Itoa(UID) + ":" + strconv.Itoa(GID) + ":Kiln:" + DataDir + ":/sbin/nologin\n")},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/bin/", mode: 0o755, dir: true},
		{name: "usr/bin/kiln", mode: 0o755, data: bin},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: "var/lib/kiln/", mode: 0o700, uid: UID, gid: GID, dir: true},
	}
	if opts.CABundle != "" {
		pem, err := os.ReadFile(opts.CABundle)
		if err != nil {
			return nil, "", fmt.Errorf("image: read the CA bundle: %w", err)
		}
		entries = append(entries,
			entry{name: "etc/ssl/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: pem})
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.name, b.name) })

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: created,
			Typeflag: tar.TypeReg, Size: int64(len(e.data)), Format: tar.FormatUSTAR,
		}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", fmt.Errorf("image: layer %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, "", fmt.Errorf("image: layer %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("image: layer: %w", err)
	}
	diffID := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, "", err
	}
	// The gzip header's time and name stay empty: they would differ per build.
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", fmt.Errorf("image: compress layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("image: compress layer: %w", err)
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(diffID[:]), nil
}

// writeBlob stores data under blobs/sha256 and describes it.
func writeBlob(dir, mediaType string, data []byte) (Descriptor, error) {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), data, 0o644); err != nil {
		return Descriptor{}, fmt.Errorf("image: write blob %s: %w", h, err)
	}
	return Descriptor{MediaType: mediaType, Digest: "sha256:" + h, Size: int64(len(data))}, nil
}

// ReadIndex reads a layout's index.json (for tests and tools).
func ReadIndex(dir string) (Index, error) {
	var idx Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return idx, fmt.Errorf("image: %s is not an OCI layout: %w", dir, err)
		}
		return idx, err
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return idx, fmt.Errorf("image: %s/index.json: %w", dir, err)
	}
	return idx, nil
}
