package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadArchive: whatever the bytes, readArchive returns an error or a
// manifest whose every member was written with the size and hash it lists,
// and it writes nothing but the members it knows.
func FuzzReadArchive(f *testing.F) {
	db := []byte("SQLite format 3\x00 not really")
	sum := sha256.Sum256(db)
	m := &Manifest{Format: Format, SchemaVersion: 3, Files: []File{{Name: DatabaseName, Size: int64(len(db)), SHA256: hex.EncodeToString(sum[:])}}}
	f.Add(rawArchive(f, m, []member{{DatabaseName, db}}))
	f.Add(rawArchive(f, m, []member{{DatabaseName, db}, {DatabaseName, db}}))
	f.Add(rawArchive(f, m, []member{{"../x", db}}))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		got, err := readArchive(bytes.NewReader(data), dir, 1000)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !knownMember(e.Name()) {
				t.Fatalf("wrote %q", e.Name())
			}
		}
		if err != nil {
			return
		}
		for _, fl := range got.Files {
			b, err := os.ReadFile(filepath.Join(dir, fl.Name))
			if err != nil {
				t.Fatal(err)
			}
			s := sha256.Sum256(b)
			if int64(len(b)) != fl.Size || hex.EncodeToString(s[:]) != fl.SHA256 {
				t.Fatalf("member %s accepted with another size or hash", fl.Name)
			}
		}
	})
}
