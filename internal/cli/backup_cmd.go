package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/backup"
	"github.com/kilnhq/kiln/internal/store/sqlite"
)

// storeSettings are the kiln serve settings that say where its state is; they
// keep serve's flag names, so that backup and restore read the same kiln.yaml.
type storeSettings struct {
	configFile, defaultConfig string
	database, kekFile         string
}

func (s *storeSettings) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.configFile, "config", "", "kiln serve's YAML config file; default "+DefaultConfigFile+" when it exists (env KILN_CONFIG)")
	f.StringVar(&s.defaultConfig, "default-config", DefaultConfigFile, "config file read when --config is not given and it exists (env KILN_DEFAULT_CONFIG)")
	f.MarkHidden("default-config")
	f.StringVar(&s.database, "database", "", "kiln serve's --database; only the embedded SQLite store is backed up here (env KILN_DATABASE)")
	f.StringVar(&s.kekFile, "kek-file", "", "kiln serve's key-encryption key file; default <data-dir>/kek.key (env KILN_KEK_FILE)")
}

// load reads kiln serve's config file for the settings not given otherwise.
func (s *storeSettings) load(cmd *cobra.Command) error {
	file, err := serveConfigFile(s.configFile, s.defaultConfig)
	if err != nil || file == "" {
		return err
	}
	return bindKnownSettings(cmd.Flags(), file)
}

// sqliteDir is the directory of the SQLite store kiln serve uses with these
// settings (--data-dir, or the directory of a sqlite:///dir --database); a
// PostgreSQL store is refused: its backup is pg_dump's.
func (s *storeSettings) sqliteDir(what, dataDir string) (string, error) {
	scheme, rest, _ := strings.Cut(s.database, "://")
	switch {
	case s.database == "":
		return dataDir, nil
	case strings.EqualFold(scheme, "sqlite") && rest == "":
		return dataDir, nil
	case strings.EqualFold(scheme, "sqlite") && strings.HasPrefix(rest, "/"):
		return rest, nil
	}
	return "", fmt.Errorf("%s: the store is not the embedded SQLite one (--database): back PostgreSQL up with pg_dump and pg_restore, and keep the KEK, audit-chain.key and audit.head files with it (README, Backups and restores)", what)
}

func newBackupCmd(g *globalFlags) *cobra.Command {
	var s storeSettings
	var out string
	var includeKEK bool
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent backup of the local SQLite store while kiln serve runs",
		Long: `Write an archive (tar.gz, mode 0600) of what a restore needs: a consistent
snapshot of the database (SQLite's VACUUM INTO: kiln serve goes on serving
meanwhile), the audit chain's anchored head, and a manifest with the Kiln
version, the schema version and the SHA-256 of each file.

The key-encryption key is NOT included unless --include-kek: it opens every
secret and the CA key, so an archive holding it must be kept like the key
itself. Without it, keep kek.key and audit-chain.key (next to it) apart from the
backups, e.g. in a password manager or an offline copy. With --include-kek,
encrypt the archive (kiln backup --out - --include-kek | age -r ... > FILE).
The admin token is never included: API tokens are in the database, and you keep
your token.

Run it on the server host with kiln serve's settings (its flags, KILN_*
variables, /etc/kiln/kiln.yaml). For PostgreSQL use pg_dump (README).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := s.load(cmd); err != nil {
				return err
			}
			dir, err := s.sqliteDir("backup", g.dataDir)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("backup: --out: required (a file name, or - for standard output)")
			}
			w, commit, err := openArchiveOut(cmd, out)
			if err != nil {
				return err
			}
			m, err := backup.Create(cmdContext(cmd), w, backup.Options{DataDir: dir, KEKFile: s.kekFile, IncludeKeys: includeKEK, KilnVersion: Version})
			if err = commit(err); err != nil {
				return err
			}
			e := cmd.ErrOrStderr()
			fmt.Fprintf(e, "backup %s: schema version %d, kiln %s, %d files\n", out, m.SchemaVersion, m.KilnVersion, len(m.Files))
			if includeKEK {
				fmt.Fprintln(e, "warning: this archive holds the key-encryption key: whoever reads it can open every secret and the CA key; store it encrypted")
			} else {
				fmt.Fprintf(e, "the key-encryption key is not in it: keep %s and %s apart from this archive; a restore needs them\n",
					kekFileOr(s.kekFile, dir), filepath.Join(filepath.Dir(kekFileOr(s.kekFile, dir)), backup.AuditKeyName))
			}
			return nil
		},
	}
	s.addFlags(cmd)
	cmd.Flags().StringVar(&out, "out", "", "archive to write (refused if it exists); - writes to standard output")
	cmd.Flags().BoolVar(&includeKEK, "include-kek", false, "also put the key-encryption key and the audit chain key into the archive (then encrypt it)")
	return cmd
}

func kekFileOr(kekFile, dataDir string) string {
	if kekFile != "" {
		return kekFile
	}
	return filepath.Join(dataDir, backup.KEKName)
}

// openArchiveOut opens where the archive goes: standard output (not a
// terminal), or a new file written under a temporary name and renamed when
// complete, so that a failed backup leaves no file that looks like one.
func openArchiveOut(cmd *cobra.Command, out string) (io.Writer, func(error) error, error) {
	if out == "-" {
		w := cmd.OutOrStdout()
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				return nil, nil, errors.New("backup: --out -: standard output is a terminal; redirect it to a file or a pipe")
			}
		}
		return w, func(err error) error { return err }, nil
	}
	if _, err := os.Lstat(out); err == nil {
		return nil, nil, fmt.Errorf("backup: --out %s: exists; choose a new name", out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*") // 0600
	if err != nil {
		return nil, nil, fmt.Errorf("backup: --out %s: %w", out, err)
	}
	return tmp, func(err error) error {
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			if _, serr := os.Lstat(out); serr == nil {
				err = fmt.Errorf("backup: --out %s: appeared while the backup ran; the archive was not written", out)
			} else if err = os.Rename(tmp.Name(), out); err != nil {
				err = fmt.Errorf("backup: --out %s: %w", out, err)
			}
		}
		os.Remove(tmp.Name()) // gone after the rename; left by a failure
		return err
	}, nil
}

func newRestoreCmd(g *globalFlags) *cobra.Command {
	var s storeSettings
	var from string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore --from FILE [--data-dir DIR] [--force]",
		Short: "Restore a kiln backup into a data dir (kiln serve stopped)",
		Long: `Restore an archive written by kiln backup into --data-dir (and the audit head
and keys next to --kek-file). Everything is checked before a file is put into
place: the manifest's format, the schema version (a backup of a newer Kiln is
refused), every file's SHA-256, the database's integrity, and the KEK (from the
archive, or already at --kek-file) against the one the secrets are sealed with.

A data dir that is not empty is refused unless --force, which replaces Kiln's
files in it (stop kiln serve first). Then start kiln serve: it migrates a
database of an older schema. A backup without the KEK needs kek.key and
audit-chain.key copied back before kiln serve starts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := s.load(cmd); err != nil {
				return err
			}
			dir, err := s.sqliteDir("restore", g.dataDir)
			if err != nil {
				return err
			}
			if from == "" {
				return errors.New("restore: --from: required (a file name, or - for standard input)")
			}
			var r io.Reader = cmd.InOrStdin()
			if from != "-" {
				f, err := os.Open(from)
				if err != nil {
					return fmt.Errorf("restore: --from: %w", err)
				}
				defer f.Close()
				r = f
			}
			res, err := backup.Restore(cmdContext(cmd), r, backup.RestoreOptions{DataDir: dir, KEKFile: s.kekFile, Force: force,
				SchemaVersion: sqlite.LatestSchemaVersion()})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			m := res.Manifest
			fmt.Fprintf(w, "restored %s into %s: schema version %d (this Kiln: %d), written by kiln %s at %s\n",
				from, dir, m.SchemaVersion, sqlite.LatestSchemaVersion(), m.KilnVersion, m.CreatedAt.Format("2006-01-02T15:04:05Z"))
			if res.NeedsKEK {
				kek := kekFileOr(s.kekFile, dir)
				fmt.Fprintf(w, "next: copy the key-encryption key to %s and %s next to it (mode 0600) before starting kiln serve: the backup does not hold them\n",
					kek, backup.AuditKeyName)
			}
			fmt.Fprintln(w, "then start kiln serve; use your own API token (admin.token is not part of a backup)")
			return nil
		},
	}
	s.addFlags(cmd)
	cmd.Flags().StringVar(&from, "from", "", "archive to restore; - reads standard input")
	cmd.Flags().BoolVar(&force, "force", false, "restore into a data dir that is not empty, replacing Kiln's files in it")
	return cmd
}
