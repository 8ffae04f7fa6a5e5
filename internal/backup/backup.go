// Package backup writes and restores an archive of what a Kiln on SQLite needs
// to continue elsewhere: a consistent snapshot of its database (taken while
// kiln serve runs), the audit chain's anchored head and, only when asked, the
// key-encryption key and the audit chain key.
//
// The archive is a gzip-compressed tar whose first member is MANIFEST.json:
// the format, the Kiln version and database schema version that wrote it, and
// the size and SHA-256 of every other member. Members are plain file names
// (no directories). Restore checks every hash and the schema version before
// anything in the data dir is replaced.
//
// Keys are left out by default: an archive with the KEK opens every secret and
// the CA key, so it would have to be kept as carefully as the KEK itself, and
// backups tend to be copied to places that are not. With IncludeKeys the
// archive holds them, is written 0600 like every archive, and is the
// operator's to encrypt (kiln backup --out - | age ...). PostgreSQL is backed
// up with pg_dump, not here (README, Backups).
package backup

import (
	"archive/tar"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kilnhq/kiln/internal/store/sqlite"
)

// Format names the archive layout; Restore refuses any other.
const Format = "kiln-backup/1"

// Member names in the archive.
const (
	ManifestName = "MANIFEST.json"
	DatabaseName = sqlite.FileName
	// AuditHeadName, KEKName and AuditKeyName are kept beside the KEK file
	// (kiln serve's --kek-file, default in the data dir).
	AuditHeadName = "audit.head"
	KEKName       = "kek.key"
	AuditKeyName  = "audit-chain.key"
)

// Limits a reader enforces before trusting the manifest.
const (
	maxManifestBytes = 1 << 20
	maxMembers       = 16
)

// Manifest describes an archive.
type Manifest struct {
	Format        string    `json:"format"`
	KilnVersion   string    `json:"kilnVersion"`
	SchemaVersion int64     `json:"schemaVersion"`
	CreatedAt     time.Time `json:"createdAt"`
	Files         []File    `json:"files"`
	// KeysIncluded says whether kek.key and audit-chain.key are in the archive;
	// when not, the restored Kiln needs them copied from where they are kept.
	KeysIncluded bool `json:"keysIncluded"`
}

// File is one member of the archive.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Options say what to back up.
type Options struct {
	// DataDir holds kiln.db.
	DataDir string
	// KEKFile is kiln serve's --kek-file; default DataDir/kek.key. The audit
	// head and the audit chain key are next to it.
	KEKFile string
	// IncludeKeys puts the KEK and the audit chain key into the archive.
	IncludeKeys bool
	// KilnVersion is recorded in the manifest.
	KilnVersion string
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

func (o *Options) kekFile() string {
	return cmp.Or(o.KEKFile, filepath.Join(o.DataDir, KEKName))
}

// Create writes an archive of the data dir to w and returns its manifest. The
// database is copied with VACUUM INTO, one read transaction: kiln serve goes on
// writing meanwhile, and the copy is the database as of one commit.
func Create(ctx context.Context, w io.Writer, opts Options) (*Manifest, error) {
	if opts.DataDir == "" {
		return nil, errors.New("backup: no data dir")
	}
	stage, err := os.MkdirTemp("", "kiln-backup-")
	if err != nil {
		return nil, fmt.Errorf("backup: staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	keyDir := filepath.Dir(opts.kekFile())

	// The audit head first, then the database: the head is written after the
	// commits it names, so a head read before the snapshot is at or behind it,
	// which verification accepts. Read after, it could name entries the
	// snapshot lacks, and the restored chain would fail verification.
	parts := []string{DatabaseName}
	if err := copyIfExists(filepath.Join(keyDir, AuditHeadName), filepath.Join(stage, AuditHeadName)); err == nil {
		parts = append(parts, AuditHeadName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backup: audit head: %w", err)
	}
	if opts.IncludeKeys {
		// During a key rotation kek.key.new or .old exist, and which key the
		// secrets are sealed with is settled only when kiln serve finishes it:
		// an archive with one of them could hold the wrong one.
		for _, sib := range []string{opts.kekFile() + ".new", opts.kekFile() + ".old"} {
			if _, err := os.Stat(sib); err == nil {
				return nil, fmt.Errorf("backup: %s exists: a key rotation is not finished (kiln serve finishes it at start); back up with --include-kek after it", sib)
			}
		}
		for _, k := range []struct{ from, name string }{{opts.kekFile(), KEKName}, {filepath.Join(keyDir, AuditKeyName), AuditKeyName}} {
			if err := copyIfExists(k.from, filepath.Join(stage, k.name)); err != nil {
				return nil, fmt.Errorf("backup: include %s: %w", k.name, err)
			}
			parts = append(parts, k.name)
		}
	}

	if err := sqlite.Snapshot(ctx, filepath.Join(opts.DataDir, sqlite.FileName), filepath.Join(stage, DatabaseName)); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	snap, err := sqlite.OpenExisting(ctx, filepath.Join(stage, DatabaseName))
	if err != nil {
		return nil, fmt.Errorf("backup: open the snapshot: %w", err)
	}
	version, err := sqlite.SchemaVersion(ctx, snap)
	if err == nil {
		err = sqlite.QuickCheck(ctx, snap)
	}
	snap.Close()
	if err != nil {
		return nil, fmt.Errorf("backup: check the snapshot: %w", err)
	}
	if version == 0 {
		return nil, fmt.Errorf("backup: %s has no Kiln schema (an empty database?)", filepath.Join(opts.DataDir, sqlite.FileName))
	}

	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	m := &Manifest{Format: Format, KilnVersion: opts.KilnVersion, SchemaVersion: version,
		CreatedAt: now().UTC(), KeysIncluded: opts.IncludeKeys}
	for _, name := range parts {
		sum, size, err := hashFile(filepath.Join(stage, name))
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		m.Files = append(m.Files, File{Name: name, Size: size, SHA256: sum})
	}
	if err := writeArchive(w, stage, m); err != nil {
		return nil, fmt.Errorf("backup: write the archive: %w", err)
	}
	return m, nil
}

// writeArchive writes the manifest, then each file of m from dir.
func writeArchive(w io.Writer, dir string, m *Manifest) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	mb = append(mb, '\n')
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.CreatedAt, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(mb)))); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	for _, f := range m.Files {
		if err := tw.WriteHeader(hdr(f.Name, f.Size)); err != nil {
			return err
		}
		src, err := os.Open(filepath.Join(dir, f.Name))
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, src, f.Size)
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// copyIfExists copies a file (0600); the error wraps fs.ErrNotExist when from
// does not exist.
func copyIfExists(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return dst.Close()
}

func hashFile(path string) (sum string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}
