package packaging

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kilnhq/kiln/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m.Run)) }

// maxExposure is the highest `systemd-analyze security` exposure the unit may
// score (0 is best, 10 worst); README records the current figure.
const maxExposure = 2.0

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebInstallsIntoAFreshRoot builds the .deb as make deb does, installs it with
// dpkg into an empty directory tree (dpkg --root --force-script-chrootless: the
// maintainer scripts run on this host with DPKG_ROOT set, so they make the kiln
// user and /var/lib/kiln inside the tree, which needs no chroot and no systemd
// running), and checks the files, the user, the conffile and the unit.
func TestDebInstallsIntoAFreshRoot(t *testing.T) {
	testkit.NeedRoot(t, "dpkg --root giving /var/lib/kiln to the kiln user")
	for tool, pkg := range map[string]string{"dpkg-deb": "dpkg", "dpkg": "dpkg", "systemd-analyze": "systemd", "systemd-sysusers": "systemd", "systemd-tmpfiles": "systemd", "gzip": "gzip"} {
		testkit.NeedTool(t, tool, pkg)
	}
	bin := testkit.KilnBinary(t)
	out := t.TempDir()
	deb := strings.TrimSpace(lastLine(run(t, "../../deploy/debian/build-deb.sh", bin, "v1.2.3-4-gabcdef", out, "amd64")))
	if want := filepath.Join(out, "kiln_1.2.3+4+gabcdef_amd64.deb"); deb != want {
		t.Fatalf("build-deb.sh made %q, want %q", deb, want)
	}

	t.Run("control", func(t *testing.T) {
		for field, want := range map[string]string{"Package": "kiln", "Version": "1.2.3+4+gabcdef", "Architecture": "amd64"} {
			if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
				t.Errorf("%s: %q, want %q", field, got, want)
			}
		}
	})

	// Owners and modes as the archive holds them (dpkg-deb -c: "-rwxr-xr-x root/root ... ./usr/bin/kiln").
	t.Run("archive modes", func(t *testing.T) {
		listing := map[string]string{}
		for _, l := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
			if f := strings.Fields(l); len(f) >= 6 {
				listing[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
			}
		}
		for path, want := range map[string]string{
			"/usr/bin/kiln":                                  "-rwxr-xr-x root/root",
			"/etc/kiln/kiln.yaml":                            "-rw-r--r-- root/root",
			"/usr/lib/systemd/system/kiln.service":           "-rw-r--r-- root/root",
			"/usr/lib/sysusers.d/kiln.conf":                  "-rw-r--r-- root/root",
			"/usr/lib/tmpfiles.d/kiln.conf":                  "-rw-r--r-- root/root",
			"/usr/share/man/man1/kiln-serve.1.gz":            "-rw-r--r-- root/root",
			"/usr/share/man/man1/kiln.1.gz":                  "-rw-r--r-- root/root",
			"/usr/share/bash-completion/completions/kiln":    "-rw-r--r-- root/root",
			"/usr/share/zsh/vendor-completions/_kiln":        "-rw-r--r-- root/root",
			"/usr/share/fish/vendor_completions.d/kiln.fish": "-rw-r--r-- root/root",
		} {
			if got := listing[path]; got != want {
				t.Errorf("%s: %q in the archive, want %q", path, got, want)
			}
		}
	})

	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		// --force-depends: the scratch root has no systemd package installed.
		return run(t, "dpkg", append([]string{"--root=" + root, "--force-not-root", "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
	}
	dpkg("-i", deb)
	if st := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Status}", "kiln"); st != "install ok installed" {
		t.Fatalf("dpkg status of kiln: %q", st)
	}

	t.Run("files", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(root, "usr/bin/kiln"))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("/usr/bin/kiln: %v, %v", fi, err)
		}
		v := run(t, filepath.Join(root, "usr/bin/kiln"), "version")
		if !strings.HasPrefix(v, "kiln ") {
			t.Errorf("installed kiln version: %q", v)
		}
		man := readGzip(t, filepath.Join(root, "usr/share/man/man1/kiln-serve.1.gz"))
		if !strings.Contains(man, `.TH "KILN-SERVE" 1`) || !strings.Contains(man, `\fB\-\-dhcp\-interface\fR`) {
			t.Errorf("kiln-serve(1) lacks its title or the --dhcp-interface flag:\n%s", man[:min(len(man), 400)])
		}
		for path, want := range map[string]string{
			"usr/share/bash-completion/completions/kiln":    "__start_kiln",
			"usr/share/zsh/vendor-completions/_kiln":        "#compdef kiln",
			"usr/share/fish/vendor_completions.d/kiln.fish": "complete -c kiln",
		} {
			b, err := os.ReadFile(filepath.Join(root, path))
			if err != nil || !strings.Contains(string(b), want) {
				t.Errorf("%s: want %q in it (err %v)", path, want, err)
			}
		}
	})

	t.Run("config is a conffile of commented defaults", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info/kiln.conffiles"))
		if err != nil || string(b) != "/etc/kiln/kiln.yaml\n" {
			t.Fatalf("conffiles: %q, %v", b, err)
		}
		cfg, err := os.ReadFile(filepath.Join(root, "etc/kiln/kiln.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		keys := 0
		for _, l := range strings.Split(string(cfg), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				t.Errorf("kiln.yaml sets %q: the shipped file must change no default", l)
			}
			if strings.HasPrefix(l, "#data-dir: /var/lib/kiln") || strings.HasPrefix(l, "#dhcp-interface: []") {
				keys++
			}
		}
		if keys != 2 {
			t.Errorf("kiln.yaml lacks #data-dir or #dhcp-interface at their defaults:\n%s", cfg)
		}
	})

	t.Run("user and state directory", func(t *testing.T) {
		uid, home, shell := passwdEntry(t, filepath.Join(root, "etc/passwd"), "kiln")
		if home != "/var/lib/kiln" || !strings.HasSuffix(shell, "nologin") || uid == 0 || uid >= 1000 {
			t.Errorf("kiln user: uid %d home %q shell %q, want a system uid, /var/lib/kiln, nologin", uid, home, shell)
		}
		fi, err := os.Stat(filepath.Join(root, "var/lib/kiln"))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o700 || int(st.Uid) != uid {
			t.Errorf("/var/lib/kiln: mode %v owner %d, want 0700 owned by kiln (%d)", fi.Mode().Perm(), st.Uid, uid)
		}
	})

	unit := filepath.Join(root, "usr/lib/systemd/system/kiln.service")
	t.Run("unit", func(t *testing.T) {
		settings := unitSettings(t, unit)
		for key, want := range map[string]string{
			"Type":                    "notify",
			"NotifyAccess":            "main",
			"WatchdogSec":             "60s",
			"ExecStart":               "/usr/bin/kiln serve",
			"User":                    "kiln",
			"StateDirectory":          "kiln",
			"StateDirectoryMode":      "0700",
			"UMask":                   "0077",
			"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE CAP_NET_RAW",
			"AmbientCapabilities":     "CAP_NET_BIND_SERVICE CAP_NET_RAW",
			"NoNewPrivileges":         "yes",
			"ProtectSystem":           "strict",
			"ReadWritePaths":          "/var/lib/kiln",
			"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
			"SystemCallFilter":        "@system-service ~@privileged",
			"MemoryDenyWriteExecute":  "yes",
		} {
			if got := settings[key]; got != want {
				t.Errorf("%s=%q, want %q", key, got, want)
			}
		}
	})

	// systemd-analyze verify resolves the unit's dependencies (sysinit.target, ...)
	// and ExecStart inside --root: give the scratch root the host's units beside
	// Kiln's, so that what is checked is the installed kiln.service and binary.
	t.Run("systemd-analyze verify", func(t *testing.T) {
		host, err := os.ReadDir("/usr/lib/systemd/system")
		if err != nil {
			testkit.Missing(t, "the host's systemd units: %v", err)
		}
		for _, e := range host {
			dst := filepath.Join(root, "usr/lib/systemd/system", e.Name())
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			src := filepath.Join("/usr/lib/systemd/system", e.Name())
			if err := exec.Command("cp", "-a", src, dst).Run(); err != nil {
				t.Fatalf("copy %s: %v", src, err)
			}
		}
		// Any diagnostic, even an "unknown key ... ignoring" that exits 0, fails.
		if out := run(t, "systemd-analyze", "verify", "--man=no", "--root="+root, "kiln.service"); strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify kiln.service:\n%s", out)
		}
	})

	t.Run("systemd-analyze security", func(t *testing.T) {
		out := run(t, "systemd-analyze", "security", "--offline=yes", "--root="+root, "kiln.service")
		m := regexp.MustCompile(`Overall exposure level for kiln\.service: ([0-9.]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level in:\n%s", out)
		}
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("systemd-analyze security exposure: %.1f", score)
		if score > maxExposure {
			t.Errorf("exposure %.1f, more than %.1f: a hardening setting was lost\n%s", score, maxExposure, out)
		}
	})

	// Remove keeps the edited conffile (dpkg's rule); purge takes it too.
	t.Run("remove and purge", func(t *testing.T) {
		dpkg("-r", "kiln")
		if _, err := os.Stat(filepath.Join(root, "usr/bin/kiln")); err == nil {
			t.Error("/usr/bin/kiln left after dpkg -r")
		}
		if _, err := os.Stat(filepath.Join(root, "etc/kiln/kiln.yaml")); err != nil {
			t.Errorf("dpkg -r removed the conffile: %v", err)
		}
		dpkg("-P", "kiln")
		if _, err := os.Stat(filepath.Join(root, "etc/kiln/kiln.yaml")); err == nil {
			t.Error("conffile left after dpkg -P")
		}
		if _, err := os.Stat(filepath.Join(root, "var/lib/kiln")); err != nil {
			t.Errorf("purge removed /var/lib/kiln (the database and CA key): %v", err)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func readGzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}

func passwdEntry(t *testing.T, path, user string) (uid int, home, shell string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == user {
			uid, _ = strconv.Atoi(f[2])
			return uid, f[5], f[6]
		}
	}
	t.Fatalf("no user %s in %s:\n%s", user, path, b)
	return 0, "", ""
}

// unitSettings reads a unit's Key=Value lines; a key given twice (SystemCallFilter)
// has its values joined by a space.
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		if prev, dup := out[k]; dup {
			v = prev + " " + v
		}
		out[k] = v
	}
	return out
}
