package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// Interoperability with the TFTP clients Debian ships. CI installs them
// (apt-get install -y tftp-hpa atftp curl); elsewhere a missing client skips
// its test, but with CI=true it fails (testkit.NeedTool), so that a broken CI
// image cannot pass silently.

func requireClient(t *testing.T, name string) string {
	t.Helper()
	packages := map[string]string{"tftp": "tftp-hpa", "atftp": "atftp", "curl": "curl"}
	return testkit.NeedTool(t, name, packages[name])
}

// peerFiles writes files of awkward sizes into a fresh root: empty, one
// block exactly, window multiples, and one over a MiB.
func peerFiles(t *testing.T) (root string, files map[string][]byte) {
	t.Helper()
	root = t.TempDir()
	files = map[string][]byte{}
	for i, n := range []int{0, 1, 511, 512, 1468, 16 * 1468, 100_000, 1<<20 + 7, 3 << 20} {
		files["f"+strconv.Itoa(n)+".bin"] = testData(n, uint64(1000+i))
	}
	files["boot/grub/grub.cfg"] = []byte("set timeout=1\nmenuentry 'x' {\r\n\tlinux /vmlinuz\r}\n\n")
	for name, b := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, b, 0o644))
	}
	return root, files
}

type peerCase struct {
	name string
	want []byte // expected output file content; nil: the command must fail
	args func(out string) []string
}

func runPeer(t *testing.T, bin string, tc peerCase) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, tc.args(out)...)
	cmd.Stdin = nil
	cmd.Dir = t.TempDir()
	output, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s timed out: %s", cmd, output)
	}
	got, rerr := os.ReadFile(out)
	if tc.want == nil {
		// tftp-hpa exits 0 even on errors; its message and the missing or
		// empty output file tell.
		if err == nil && rerr == nil && len(got) > 0 {
			t.Fatalf("%s succeeded, want failure: %s", cmd, output)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, output)
	}
	if rerr != nil {
		t.Fatalf("%s: %v\n%s", cmd, rerr, output)
	}
	if sha256.Sum256(got) != sha256.Sum256(tc.want) {
		t.Fatalf("%s: sha256 of %d bytes differs from the source's %d bytes\n%s", cmd, len(got), len(tc.want), output)
	}
}

func TestPeers(t *testing.T) {
	root, files := peerFiles(t)
	m := new(Metrics)
	addr := startServer(t, &Server{Handler: DirHandler(root, map[string]string{"ipxe.efi": "f100000.bin"}), Metrics: m})
	host, port := addr.Addr().String(), strconv.Itoa(int(addr.Port()))
	names := make([]string, 0, len(files))
	for n := range files {
		if strings.HasSuffix(n, ".bin") {
			names = append(names, n)
		}
	}

	clients := []struct {
		bin   string
		check func(t *testing.T, path string)
		cases func() []peerCase
	}{
		{
			bin: "tftp", // tftp-hpa: lock-step, no options
			check: func(t *testing.T, path string) {
				out, _ := exec.Command(path, "-V").CombinedOutput()
				if !bytes.Contains(out, []byte("tftp-hpa")) {
					t.Skipf("tftp is not tftp-hpa: %s", out)
				}
			},
			cases: func() []peerCase {
				get := func(mode, file string) func(string) []string {
					return func(out string) []string {
						return []string{"-m", mode, host, port, "-c", "get", file, out}
					}
				}
				var cs []peerCase
				for _, n := range names {
					cs = append(cs, peerCase{name: n, want: files[n], args: get("binary", n)})
				}
				return append(cs,
					peerCase{name: "leading slash", want: files["f1468.bin"], args: get("binary", "/f1468.bin")},
					peerCase{name: "alias", want: files["f100000.bin"], args: get("binary", "ipxe.efi")},
					// The client turns netascii back into local text.
					peerCase{name: "ascii", want: files["boot/grub/grub.cfg"], args: get("ascii", "boot/grub/grub.cfg")},
					peerCase{name: "missing", args: get("binary", "missing")},
					peerCase{name: "dotdot", args: get("binary", "../etc/passwd")},
				)
			},
		},
		{
			bin: "atftp",
			cases: func() []peerCase {
				get := func(file string, opts ...string) func(string) []string {
					return func(out string) []string {
						args := []string{"-g", "-r", file, "-l", out}
						for _, o := range opts {
							args = append(args, "--option", o)
						}
						return append(args, host, port)
					}
				}
				var cs []peerCase
				for _, n := range names {
					cs = append(cs,
						peerCase{name: n + "/plain", want: files[n], args: get(n)},
						peerCase{name: n + "/blksize", want: files[n], args: get(n, "blksize 1468")},
						peerCase{name: n + "/blksize+windowsize", want: files[n], args: get(n, "blksize 1468", "windowsize 16")},
						peerCase{name: n + "/tsize+timeout", want: files[n], args: get(n, "tsize", "timeout 2", "blksize 512")},
					)
				}
				return append(cs,
					peerCase{name: "windowsize 64 small blocks", want: files["f1048583.bin"], args: get("f1048583.bin", "blksize 256", "windowsize 64")},
					peerCase{name: "missing", args: get("missing", "blksize 1468")},
					peerCase{name: "dotdot", args: get("../etc/passwd")},
				)
			},
		},
		{
			bin: "curl",
			cases: func() []peerCase {
				get := func(file string, opts ...string) func(string) []string {
					return func(out string) []string {
						return append([]string{"-sS", "--fail", "-o", out, "--max-time", "50"},
							append(opts, fmt.Sprintf("tftp://%s:%s/%s", host, port, file))...)
					}
				}
				var cs []peerCase
				for _, n := range names {
					cs = append(cs,
						peerCase{name: n + "/default", want: files[n], args: get(n)},
						peerCase{name: n + "/blksize", want: files[n], args: get(n, "--tftp-blksize", "1468")},
						peerCase{name: n + "/no-options", want: files[n], args: get(n, "--tftp-no-options")},
					)
				}
				return append(cs,
					peerCase{name: "nested", want: files["boot/grub/grub.cfg"], args: get("boot/grub/grub.cfg", "--tftp-blksize", "1468")},
					peerCase{name: "missing", args: get("missing")},
				)
			},
		},
	}
	for _, c := range clients {
		t.Run(c.bin, func(t *testing.T) {
			path := requireClient(t, c.bin)
			if c.check != nil {
				c.check(t, path)
			}
			for _, tc := range c.cases() {
				t.Run(tc.name, func(t *testing.T) { runPeer(t, path, tc) })
			}
		})
	}
	waitFor(t, "transfers to settle", func() bool {
		return m.Requests.Load() == m.Refused.Load()+m.TransfersCompleted.Load()+m.TransfersFailed.Load()+m.TransfersAborted.Load()
	})
	if m.TransfersFailed.Load() != 0 {
		t.Errorf("%d transfers failed", m.TransfersFailed.Load())
	}
	t.Logf("requests %d, completed %d, refused %d, aborted %d, bytes %d, retransmits %d", m.Requests.Load(), m.TransfersCompleted.Load(),
		m.Refused.Load(), m.TransfersAborted.Load(), m.BytesSent.Load(), m.Retransmits.Load())
}
