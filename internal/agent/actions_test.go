package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

func TestExec(t *testing.T) {
	env := testEnv(t, &System{})
	err := execAction(context.Background(), env, Args{"command": `echo one; echo two >&2; echo "$GREETING"`, "env": map[string]any{"GREETING": "hi there"}})
	if err != nil {
		t.Fatal(err)
	}
	logs := strings.Join(env.rep.takeLogs(-1), "\n")
	for _, want := range []string{"one", "two", "hi there"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	env = testEnv(t, &System{})
	err = execAction(context.Background(), env, Args{"args": []any{"sh", "-c", "echo failing; exit 3"}})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "last output: failing") {
		t.Fatalf("err = %v", err)
	}
	if err := execAction(context.Background(), env, Args{}); !errors.Is(err, errPermanent) {
		t.Errorf("no command: %v", err)
	}
}

func TestExecTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "survivor")
	env := testEnv(t, &System{})
	start := time.Now()
	// A pipeline whose members would outlive the shell if only the shell were killed.
	err := execAction(context.Background(), env, Args{"command": "(sleep 2; touch " + marker + ") | cat; sleep 30", "timeout": "300ms"})
	if err == nil || !strings.Contains(err.Error(), "args.timeout 300ms exceeded") {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("a process of the group survived the timeout")
	}
}

func TestWriteIntoRoot(t *testing.T) {
	root := t.TempDir()
	if err := writeIntoRoot(root, "/etc/hostname", []byte("web-1\n"), 0o640, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(root, "etc/hostname"))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("%v %v", st, err)
	}
	// Overwrite: atomic, no temporary file left.
	if err := writeIntoRoot(root, "/etc/hostname", []byte("web-2\n"), 0o4755, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/hostname"))
	st, _ = os.Stat(filepath.Join(root, "etc/hostname"))
	if string(b) != "web-2\n" || st.Mode()&os.ModeSetuid == 0 {
		t.Errorf("%q %v", b, st.Mode())
	}
	entries, _ := os.ReadDir(filepath.Join(root, "etc"))
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
	// A symlink in the target filesystem cannot lead the write out of it.
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(root, "escape"))
	os.Symlink("/../../"+outside, filepath.Join(root, "escape2"))
	for _, p := range []string{"/escape/x", "/escape2/x", "/../x"} {
		writeIntoRoot(root, p, []byte("no"), 0o644, os.Getuid(), os.Getgid())
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a write escaped the root: %v", entries)
	}
}

func TestWriteFileArgs(t *testing.T) {
	env := testEnv(t, &System{})
	for _, c := range []struct {
		args Args
		want string
	}{
		{Args{"content": "x", "partitionLabel": "root"}, "args.path: required"},
		{Args{"path": "etc/x", "content": "x", "partitionLabel": "root"}, "absolute"},
		{Args{"path": "/etc/x", "content": "x"}, "partitionLabel"},
		{Args{"path": "/etc/x", "partitionLabel": "root"}, "args.content: required"},
		{Args{"path": "/etc/x", "content": "x", "partitionLabel": "root", "mode": "999"}, "octal"},
		{Args{"path": "/etc/x", "content": "x", "partitionLabel": "root", "fsLabel": "root"}, "give one of partitionLabel"},
	} {
		err := writeFile(context.Background(), env, c.args)
		if err == nil || !errors.Is(err, errPermanent) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
	}
}

// TestWriteFileOnLoopDevice runs partition and write-file for real: a GPT on a loop
// device, mkfs.ext4 on its partition, then write-file mounts it and writes. Where the
// kernel shows the partition (loopNp1), write-file finds it by label; a kernel
// without GPT support (this sandbox's) gets the partition as a second loop device
// at its offset, given by device. Needs root, losetup, mkfs.ext4 and debugfs.
func TestWriteFileOnLoopDevice(t *testing.T) {
	loop := loopDevice(t, 64<<20, 0, 0)
	sys := &System{}
	label := "kiln-test-" + strings.TrimPrefix(filepath.Base(loop), "loop")
	err := partition(context.Background(), testEnv(t, sys), Args{"disk": loop, "partitions": []any{
		map[string]any{"label": label, "size": "rest"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(loop)
	layout, err := ReadGPT(f, 64<<20, 512)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	args := Args{"path": "/etc/kiln/hostname", "content": "web-1\n", "mode": "0600", "uid": 1000, "gid": 1000}
	part := loop + "p1"
	if appeared(part) {
		args["partitionLabel"] = label
	} else {
		p := layout.Partitions[0]
		part = loopDevice(t, 0, int64(p.First*512), int64((p.Last-p.First+1)*512), loop)
		args["device"] = part
		t.Logf("the kernel shows no partitions of %s; writing through %s", loop, part)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", part).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if err := writeFile(context.Background(), testEnv(t, sys), args); err != nil {
		t.Fatal(err)
	}
	// Read it back with debugfs, without mounting.
	out, err := exec.Command("debugfs", "-R", "cat /etc/kiln/hostname", part).Output()
	if err != nil || string(out) != "web-1\n" {
		t.Fatalf("debugfs cat: %q %v", out, err)
	}
	out, _ = exec.Command("debugfs", "-R", "stat /etc/kiln/hostname", part).Output()
	if !strings.Contains(string(out), "User:  1000") || !strings.Contains(string(out), "Mode:  0600") {
		t.Errorf("owner or mode wrong:\n%s", out)
	}
}

// TestImage2DiskOnLoopDevice writes an image to a real block device, and refuses
// one that is mounted.
func TestImage2DiskOnLoopDevice(t *testing.T) {
	loop := loopDevice(t, 32<<20, 0, 0)
	img := testImage(8 << 20)
	srv := newImageServer(t)
	srv.files["img.zst"] = compress(t, CompressionZstd, img)
	sys := &System{}
	err := image2disk(context.Background(), testEnv(t, sys), Args{"disk": loop, "imageURL": srv.URL + "/img.zst", "sha256": sum(srv.files["img.zst"])})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	f, _ := os.Open(loop)
	f.ReadAt(got, 0)
	f.Close()
	if !bytes.Equal(got, img) {
		t.Fatal("the device does not hold the image")
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", loop).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mnt := t.TempDir()
	if err := mountFS(loop, mnt, "ext4"); err != nil {
		t.Fatal(err)
	}
	defer unmountFS(mnt)
	err = image2disk(context.Background(), testEnv(t, sys), Args{"disk": loop, "imageURL": srv.URL + "/img.zst", "sha256": sum(srv.files["img.zst"])})
	if err == nil || !strings.Contains(err.Error(), "in use") || !errors.Is(err, errPermanent) {
		t.Errorf("image2disk on a mounted disk: %v", err)
	}
}

func TestFindPartitionByLabel(t *testing.T) {
	root := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=253\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=esp\n",
		"vda2": "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=root\n",
		"vdb1": "MAJOR=253\nMINOR=17\nDEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=data\n",
		"vdc1": "MAJOR=253\nMINOR=33\nDEVNAME=vdc1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=data\n",
	} {
		mkfile(t, filepath.Join(root, "sys/class/block", name, "uevent"), uevent)
	}
	sys := &System{Root: root}
	if d, err := sys.findPartition(context.Background(), "root"); err != nil || d != "/dev/vda2" {
		t.Errorf("root: %q %v", d, err)
	}
	if _, err := sys.findPartition(context.Background(), "data"); err == nil || !strings.Contains(err.Error(), "give args.device") {
		t.Errorf("ambiguous label: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := sys.findPartition(ctx, "nope"); err == nil {
		t.Error("found a missing label")
	}
}

func mkfile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appeared(path string) bool {
	for i := 0; i < 20; i++ {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// loopDevice attaches a sparse file of size as a loop device with partition
// scanning (or, with backing set, a window of backing at offset), detached at the
// end of the test.
func loopDevice(t testing.TB, size, offset, limit int64, backing ...string) string {
	t.Helper()
	testkit.NeedRoot(t, "loop devices")
	testkit.NeedTool(t, "losetup", "mount")
	testkit.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	testkit.NeedTool(t, "debugfs", "e2fsprogs")
	args := []string{"--find", "--show"}
	if len(backing) > 0 {
		args = append(args, "--offset", strconv.FormatInt(offset, 10), "--sizelimit", strconv.FormatInt(limit, 10), backing[0])
	} else {
		f := filepath.Join(t.TempDir(), "backing")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(f, size)
		args = append(args, "--partscan", f)
	}
	out, err := exec.Command("losetup", args...).Output()
	if err != nil {
		testkit.Missing(t, "a free loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
