package backup

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/atomicfile"
	"github.com/kilnhq/kiln/internal/secrets"
	"github.com/kilnhq/kiln/internal/store/sqlite"
)

// RestoreOptions say where to restore to.
type RestoreOptions struct {
	// DataDir receives kiln.db. It must be empty or not exist, unless Force.
	DataDir string
	// KEKFile is where the restored Kiln's --kek-file will be (default
	// DataDir/kek.key); the audit head and chain key go next to it.
	KEKFile string
	// Force replaces Kiln's files in a data dir that is not empty (kiln serve
	// must not be running on it).
	Force bool
	// SchemaVersion is the newest schema this binary knows: an archive of a
	// newer database is refused.
	SchemaVersion int64
}

func (o *RestoreOptions) kekFile() string {
	return cmp.Or(o.KEKFile, filepath.Join(o.DataDir, KEKName))
}

// Restored is what Restore did.
type Restored struct {
	Manifest *Manifest
	// NeedsKEK is set when the archive held no KEK and there is none at
	// KEKFile: kiln serve cannot open the secrets or the CA until it is copied
	// there.
	NeedsKEK bool
}

// knownMember reports whether name is one an archive may hold besides the
// manifest: restore writes nothing else, so no name can reach outside the data
// dir.
func knownMember(name string) bool {
	switch name {
	case DatabaseName, AuditHeadName, KEKName, AuditKeyName:
		return true
	}
	return false
}

// Restore reads an archive from r, checks it (format, schema version, every
// member's size and SHA-256, the database's integrity, the KEK against the
// database) and only then puts its files into place.
func Restore(ctx context.Context, r io.Reader, opts RestoreOptions) (*Restored, error) {
	if opts.DataDir == "" {
		return nil, errors.New("restore: no data dir")
	}
	if opts.SchemaVersion <= 0 {
		return nil, errors.New("restore: the binary's schema version is not set")
	}
	if err := checkTarget(opts.DataDir, opts.Force); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("restore: create the data dir: %w", err)
	}
	// Staged inside the data dir, so that the database is renamed into place
	// on the same file system.
	stage, err := os.MkdirTemp(opts.DataDir, ".restore-")
	if err != nil {
		return nil, fmt.Errorf("restore: staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	m, err := readArchive(r, stage, opts.SchemaVersion)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := checkDatabase(ctx, filepath.Join(stage, DatabaseName), m.SchemaVersion); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	res := &Restored{Manifest: m}
	kekPath := opts.kekFile()
	kek, err := restoredKEK(stage, kekPath, m.KeysIncluded, opts.Force)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if kek == nil {
		res.NeedsKEK = true
	} else if err := checkKEK(ctx, filepath.Join(stage, DatabaseName), kek); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := install(stage, opts.DataDir, kekPath, m); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return res, nil
}

// checkTarget refuses a data dir with files in it unless force.
func checkTarget(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if len(entries) == 0 || force {
		return nil
	}
	var names []string
	for _, e := range entries[:min(len(entries), 5)] {
		names = append(names, e.Name())
	}
	return fmt.Errorf("data dir %s is not empty (%s): restore into an empty directory, or stop kiln serve and pass --force to replace Kiln's files in it", dir, strings.Join(names, ", "))
}

// readArchive reads an archive into dir (which must be empty) and checks it
// against its manifest: every member listed, none twice, none unlisted, sizes
// and SHA-256s equal. A manifest of a schema newer than maxSchema is refused
// before any member is written.
func readArchive(r io.Reader, dir string, maxSchema int64) (*Manifest, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read the archive: not a gzip file: %w", err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("read the archive: %w", err)
	}
	if hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifestBytes {
		return nil, fmt.Errorf("read the archive: its first member is %q, not %s: not a Kiln backup", hdr.Name, ManifestName)
	}
	raw, err := io.ReadAll(io.LimitReader(tr, maxManifestBytes))
	if err != nil {
		return nil, fmt.Errorf("read the manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("read the manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.SchemaVersion > maxSchema {
		return nil, fmt.Errorf("the backup is of a database at schema version %d, newer than this Kiln's %d (kiln %s wrote it): restore it with that Kiln version or a newer one",
			m.SchemaVersion, maxSchema, cmp.Or(m.KilnVersion, "(unknown)"))
	}
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the archive: %w", err)
		}
		i := slices.IndexFunc(m.Files, func(f File) bool { return f.Name == hdr.Name })
		switch {
		case i < 0:
			return nil, fmt.Errorf("archive member %q: not in the manifest", hdr.Name)
		case seen[hdr.Name]:
			return nil, fmt.Errorf("archive member %q: twice in the archive", hdr.Name)
		case hdr.Typeflag != tar.TypeReg:
			return nil, fmt.Errorf("archive member %q: not a regular file", hdr.Name)
		case hdr.Size != m.Files[i].Size:
			return nil, fmt.Errorf("archive member %q: %d bytes, the manifest says %d", hdr.Name, hdr.Size, m.Files[i].Size)
		}
		seen[hdr.Name] = true
		if err := extract(tr, filepath.Join(dir, hdr.Name), m.Files[i]); err != nil {
			return nil, err
		}
	}
	for _, f := range m.Files {
		if !seen[f.Name] {
			return nil, fmt.Errorf("archive member %q: in the manifest but not in the archive (truncated?)", f.Name)
		}
	}
	return &m, nil
}

// extract writes one member to path and checks its size and hash.
func extract(r io.Reader, path string, f File) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("extract %s: %w", f.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, f.Size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", f.Name, err)
	}
	if n != f.Size {
		return fmt.Errorf("archive member %q: %d bytes, the manifest says %d (truncated?)", f.Name, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("archive member %q: sha256 %s, the manifest says %s: the archive is damaged", f.Name, got, f.SHA256)
	}
	return nil
}

// validate checks what a manifest says before anything is read by it.
func (m *Manifest) validate() error {
	if m.Format != Format {
		return fmt.Errorf("format %q: this Kiln reads %q", m.Format, Format)
	}
	if m.SchemaVersion <= 0 {
		return fmt.Errorf("schemaVersion %d: not a schema version", m.SchemaVersion)
	}
	if len(m.Files) > maxMembers {
		return fmt.Errorf("files: %d members, at most %d", len(m.Files), maxMembers)
	}
	names := map[string]bool{}
	for i, f := range m.Files {
		switch {
		case !knownMember(f.Name):
			return fmt.Errorf("files[%d].name %q: not a file a Kiln backup holds", i, f.Name)
		case names[f.Name]:
			return fmt.Errorf("files[%d].name %q: listed twice", i, f.Name)
		case f.Size < 0:
			return fmt.Errorf("files[%d].size %d: negative", i, f.Size)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("files[%d].sha256 %q: not 64 hex digits", i, f.SHA256)
		}
		names[f.Name] = true
	}
	if !names[DatabaseName] {
		return fmt.Errorf("files: no %s", DatabaseName)
	}
	if names[KEKName] != m.KeysIncluded || names[AuditKeyName] != m.KeysIncluded {
		return fmt.Errorf("keysIncluded %t: files must list %s and %s exactly when keys are included", m.KeysIncluded, KEKName, AuditKeyName)
	}
	return nil
}

// checkDatabase checks the restored database's integrity and that it is at the
// schema version the manifest says.
func checkDatabase(ctx context.Context, path string, want int64) error {
	db, err := sqlite.OpenExisting(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := sqlite.QuickCheck(ctx, db); err != nil {
		return fmt.Errorf("the backed-up database: %w", err)
	}
	got, err := sqlite.SchemaVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("the backed-up database: %w", err)
	}
	if got != want {
		return fmt.Errorf("the backed-up database is at schema version %d, the manifest says %d", got, want)
	}
	return nil
}

// restoredKEK is the KEK the restored Kiln will run with: the archive's (which
// must not silently replace another at kekPath), else the one already at
// kekPath, else nil.
func restoredKEK(stage, kekPath string, included, force bool) ([]byte, error) {
	existing, err := os.ReadFile(kekPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if !included {
		if existing == nil {
			return nil, nil
		}
		return parseKEK(kekPath, existing)
	}
	archived, err := os.ReadFile(filepath.Join(stage, KEKName))
	if err != nil {
		return nil, err
	}
	if existing != nil && !bytes.Equal(bytes.TrimSpace(existing), bytes.TrimSpace(archived)) && !force {
		return nil, fmt.Errorf("%s holds another key-encryption key than the backup's: move it away first, or pass --force to replace it", kekPath)
	}
	return parseKEK("the backup's "+KEKName, archived)
}

func parseKEK(what string, b []byte) ([]byte, error) {
	k, err := secrets.ParseKEK(string(b))
	if err != nil {
		return nil, fmt.Errorf("key-encryption key %s: %w", what, err)
	}
	return k, nil
}

// checkKEK checks that kek is the key the database's secrets are sealed with,
// as recorded in secret_kek (schema 2 on; absent before the first secret).
func checkKEK(ctx context.Context, dbPath string, kek []byte) error {
	db, err := sqlite.OpenExisting(ctx, dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'secret_kek'`).Scan(&tables); err != nil {
		return fmt.Errorf("read which key-encryption key the secrets use: %w", err)
	}
	if tables == 0 {
		return nil // a schema before secrets
	}
	var id string
	err = db.QueryRowContext(ctx, `SELECT kek_id FROM secret_kek WHERE id = 1`).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // no secret was ever set
	case err != nil:
		return fmt.Errorf("read which key-encryption key the secrets use: %w", err)
	}
	if got := secrets.KEKID(kek); got != id {
		return fmt.Errorf("the key-encryption key (id %s) is not the one the backed-up secrets are sealed with (id %s): restore with the KEK of that time", got, id)
	}
	return nil
}

// install moves the staged files into place: the database into dataDir (its
// old -wal and -shm removed first: SQLite would replay a stale WAL into the
// restored file), the KEK to kekPath, the audit head and chain key next to it.
// An audit head the archive lacks is removed, since it anchors a chain that is
// gone.
func install(stage, dataDir, kekPath string, m *Manifest) error {
	keyDir := filepath.Dir(kekPath)
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", keyDir, err)
	}
	db := filepath.Join(dataDir, DatabaseName)
	for _, stale := range []string{db + "-wal", db + "-shm", filepath.Join(keyDir, AuditHeadName)} {
		if err := os.Remove(stale); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", stale, err)
		}
	}
	for _, f := range m.Files {
		to := filepath.Join(keyDir, f.Name)
		switch f.Name {
		case DatabaseName:
			continue
		case KEKName:
			to = kekPath
		}
		b, err := os.ReadFile(filepath.Join(stage, f.Name))
		if err != nil {
			return err
		}
		if err := atomicfile.Write(to, b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", to, err)
		}
	}
	if err := os.Rename(filepath.Join(stage, DatabaseName), db); err != nil {
		return fmt.Errorf("put %s into place: %w", db, err)
	}
	return nil
}
