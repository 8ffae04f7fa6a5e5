package agent

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/verity"
)

// image2slot writes a dm-verity protected image to one slot of an A/B disk (see
// agentwire.CheckSlotLayout) and makes it the next boot, with systemd-boot's boot
// counting so that a slot that does not come up falls back to the other one.
// Arguments (the server renders the image's from its Artifact and the slot from the
// machine's status):
//
//	disk               the A/B disk: a device path or a DiskSelector; required
//	slot               a or b: the slot to write (not the one running); required
//	imageURL, sha256   the root filesystem image (data blocks), as image2disk reads
//	verityURL          the hash device veritysetup format wrote for it; veritySHA256
//	rootHash           64 hex digits
//	rootHashSignature  base64 of the detached PKCS#7 signature of rootHash's hex text
//	trustedCerts       PEM certificates whose keys may sign root hashes; required
//	version            the image's version, in the boot entry and on the kernel
//	                   command line (kiln.version=)
//	linux, initrd[]    the kernel and initrds on the ESP for the entry; or
//	efi                a UKI on the ESP
//	cmdline            the rest of the kernel command line
//	tries              boot attempts before systemd-boot gives up on the slot (3)
//	esp                the ESP's device, when it is not the EFI system partition
//	                   of disk (on another disk, or a kernel that names no
//	                   partition devices)
//
// Order, so that nothing is written that was not vouched for: the signature over
// the root hash is checked against trustedCerts; the hash tree is downloaded and
// checked against the root hash; then the image is streamed to root-SLOT, the tree
// written to root-SLOT-verity, both synced, and every block read back from the
// device and checked against the tree. Only then is the boot entry written. A
// failure after writing began wipes the slot's first MiB, leaves the other slot
// and its entry as they were, and fails the action.
func image2slot(ctx context.Context, env *Env, args Args) error {
	o, err := parseSlotArgs(args)
	if err != nil {
		return permanent(err)
	}
	signer, err := verity.VerifyRootHash(o.rootHash, o.signature, o.trusted)
	if err != nil {
		return permanent(fmt.Errorf("args.rootHashSignature: %w", err))
	}
	env.Logf("root hash %x signed by %q", o.rootHash, signer.Subject.String())

	disk, err := env.disk(args)
	if err != nil {
		return err
	}
	tgt, err := env.checkWholeDisk(disk)
	if err != nil {
		return err
	}
	var f *os.File
	size, sectorSize := int64(0), 512
	if tgt.Block {
		if f, err = openExclusiveRW(disk); err != nil {
			return fmt.Errorf("open %s: %w", disk, err)
		}
		defer f.Close()
		if size, err = blockDeviceSize(f); err != nil {
			return err
		}
		if sectorSize, err = logicalSectorSize(f); err != nil {
			return err
		}
	} else {
		if f, err = os.OpenFile(disk, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("open %s: %w", disk, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size = st.Size()
	}
	layout, err := ReadGPT(f, size, sectorSize)
	if err != nil {
		return permanent(fmt.Errorf("disk %s: %w (lay out the A/B partitions first, with a partition action)", disk, err))
	}
	sl, err := findSlot(layout, o.slot, o.espDevice == "")
	if err != nil {
		return permanent(fmt.Errorf("disk %s: %w", disk, err))
	}
	ss := int64(sectorSize)
	rootOff, rootSize := int64(sl.root.First)*ss, int64(sl.root.Last-sl.root.First+1)*ss
	verOff, verSize := int64(sl.verity.First)*ss, int64(sl.verity.Last-sl.verity.First+1)*ss

	// The hash tree first: it is small, and once it matches the signed root hash,
	// it decides whether every block that follows is the image's.
	hashDev, err := downloadBounded(ctx, env, o.verityURL, o.veritySHA256, verSize)
	if err != nil {
		return fmt.Errorf("hash tree: %w", err)
	}
	sb, err := verity.ParseSuperblock(hashDev)
	if err != nil {
		return permanent(fmt.Errorf("hash tree %s: %w", redactURL(o.verityURL), err))
	}
	tree, err := verity.ReadTree(sb, bytes.NewReader(hashDev))
	if err != nil {
		return permanent(fmt.Errorf("hash tree %s: %w", redactURL(o.verityURL), err))
	}
	if err := tree.Check(o.rootHash); err != nil {
		return permanent(fmt.Errorf("hash tree %s: %w", redactURL(o.verityURL), err))
	}
	if sb.DataSize() > rootSize {
		return permanent(fmt.Errorf("the image is %s, larger than %s (%s)", agentwire.SizeText(sb.DataSize()), sl.root.Name, agentwire.SizeText(rootSize)))
	}
	if int64(len(hashDev)) > verSize {
		return permanent(fmt.Errorf("the hash tree is %s, larger than %s (%s)", agentwire.SizeText(int64(len(hashDev))), sl.verity.Name, agentwire.SizeText(verSize)))
	}

	start := time.Now()
	env.Logf("writing slot %s: %s to %s, hash tree (%s) to %s", o.slot, redactURL(o.imageURL), sl.root.Name, agentwire.SizeText(int64(len(hashDev))), sl.verity.Name)
	written, err := writeSlotImage(ctx, env, f, o, rootOff, rootSize)
	if err == nil && written != sb.DataSize() {
		err = fmt.Errorf("the image is %s but its hash tree covers %s: truncated or not this tree's image", agentwire.SizeText(written), agentwire.SizeText(sb.DataSize()))
	}
	if err == nil {
		if _, err = f.WriteAt(hashDev, verOff); err != nil {
			err = fmt.Errorf("write the hash tree to %s: %w", sl.verity.Name, err)
		}
	}
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("fsync %s: %w", disk, err)
		}
	}
	if err == nil && tgt.Block {
		if derr := dropCache(f, rootOff, sb.DataSize()); derr != nil {
			env.Logf("could not drop %s from the page cache before reading it back: %v", sl.root.Name, derr)
		}
	}
	if err == nil {
		if err = tree.CheckData(io.NewSectionReader(f, rootOff, sb.DataSize())); err != nil {
			err = fmt.Errorf("read back %s: %w", sl.root.Name, err)
		}
	}
	if err != nil {
		wipeSlot(env, f, o.slot, []int64{rootOff, verOff})
		return err
	}
	wrote := time.Since(start)
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", disk, err)
	}

	esp := o.espDevice
	if esp == "" {
		if esp, err = env.partitionDevice(ctx, tgt, sl.esp.Number); err != nil {
			return err
		}
	}
	entry, err := env.writeBootEntry(esp, o)
	if err != nil {
		return fmt.Errorf("boot entry on the ESP (%s): %w", esp, err)
	}
	env.Logf("slot %s verified (%s, %d blocks against root hash %x) in %s; next boot: %s", o.slot,
		agentwire.SizeText(sb.DataSize()), sb.DataBlocks, o.rootHash, wrote.Round(time.Millisecond), entry)
	env.SetMessage("slot %s: %s written and verified against its signed root hash; next boot %s", o.slot, o.version, entry)
	return nil
}

// slotArgs are image2slot's arguments, checked.
type slotArgs struct {
	slot, version                    string
	imageURL, sha256                 string
	verityURL, veritySHA256          string
	rootHash, signature              []byte
	trusted                          []*x509.Certificate
	linux, efi, cmdline, compression string
	espDevice                        string
	initrds                          []string
	tries                            int64
	idle                             time.Duration
}

var safeVersion = regexp.MustCompile(`^[A-Za-z0-9._+~-]{1,64}$`)

func parseSlotArgs(args Args) (*slotArgs, error) {
	o := &slotArgs{}
	var err error
	str := func(key string, dst *string) {
		if err == nil {
			*dst, err = args.String(key)
		}
	}
	var rootHash, sig, certs string
	str("slot", &o.slot)
	str("version", &o.version)
	str("imageURL", &o.imageURL)
	str("sha256", &o.sha256)
	str("verityURL", &o.verityURL)
	str("veritySHA256", &o.veritySHA256)
	str("rootHash", &rootHash)
	str("rootHashSignature", &sig)
	str("trustedCerts", &certs)
	str("linux", &o.linux)
	str("efi", &o.efi)
	str("cmdline", &o.cmdline)
	str("compression", &o.compression)
	str("esp", &o.espDevice)
	if err != nil {
		return nil, err
	}
	if o.initrds, err = args.Strings("initrd"); err != nil {
		return nil, err
	}
	if o.tries, err = args.Int("tries", 3); err != nil {
		return nil, err
	}
	if o.idle, err = args.Duration("idleTimeout", 60*time.Second); err != nil {
		return nil, err
	}
	if o.compression, err = normalizeCompression(o.compression); err != nil {
		return nil, err
	}
	switch {
	case !slices.Contains(agentwire.Slots, o.slot):
		return nil, fmt.Errorf("args.slot: %q is not a or b", o.slot)
	case o.imageURL == "":
		return nil, errors.New("args.imageURL: required (the server sets it from args.image, an Artifact's name)")
	case o.verityURL == "":
		return nil, errors.New("args.verityURL: required (the server sets it from the image Artifact's spec.verity.hashTree)")
	case o.version != "" && !safeVersion.MatchString(o.version):
		return nil, fmt.Errorf("args.version: %q is not 1-64 of A-Z a-z 0-9 . _ + ~ -", o.version)
	case o.linux == "" && o.efi == "":
		return nil, errors.New("args.linux: required (the kernel's path on the ESP), or args.efi (a UKI's)")
	case strings.ContainsAny(o.cmdline+o.linux+o.efi+strings.Join(o.initrds, ""), "\r\n"):
		return nil, errors.New("args: linux, initrd, efi and cmdline are single lines")
	case o.tries < 1 || o.tries > 100:
		return nil, fmt.Errorf("args.tries: %d is not between 1 and 100", o.tries)
	}
	for k, v := range map[string]*string{"sha256": &o.sha256, "veritySHA256": &o.veritySHA256} {
		*v = strings.ToLower(strings.TrimPrefix(*v, "sha256:"))
		if *v == "" {
			return nil, fmt.Errorf("args.%s: required (record the artifact's sha256)", k)
		}
		if !isSHA256Hex(*v) {
			return nil, fmt.Errorf("args.%s: %q is not 64 hex digits", k, *v)
		}
	}
	o.version = cmp.Or(o.version, "unversioned")
	if o.rootHash, err = verity.ParseRootHash(strings.ToLower(rootHash)); err != nil {
		return nil, fmt.Errorf("args.rootHash: %w", err)
	}
	if o.signature, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(sig), "")); err != nil || len(o.signature) == 0 {
		return nil, fmt.Errorf("args.rootHashSignature: required, base64 of the DER PKCS#7 signature of the root hash")
	}
	if o.trusted, err = agentwire.ParseCertificatesPEM([]byte(certs)); err != nil {
		return nil, fmt.Errorf("args.trustedCerts: %w", err)
	}
	return o, nil
}

// slotParts are the partitions of one slot and the ESP.
type slotParts struct {
	root, verity, esp agentwire.GPTPartition
}

func findSlot(l *GPTLayout, slot string, needESP bool) (*slotParts, error) {
	espType, _ := agentwire.ParseGUID(agentwire.PartitionTypes["esp"])
	var s slotParts
	var haveRoot, haveVerity, haveESP bool
	for _, p := range l.Partitions {
		switch {
		case p.Name == agentwire.SlotLabel(slot):
			s.root, haveRoot = p, true
		case p.Name == agentwire.SlotVerityLabel(slot):
			s.verity, haveVerity = p, true
		case p.Type == espType && !haveESP:
			s.esp, haveESP = p, true
		}
	}
	switch {
	case !haveRoot:
		return nil, fmt.Errorf("no partition named %q: not an A/B layout", agentwire.SlotLabel(slot))
	case !haveVerity:
		return nil, fmt.Errorf("no partition named %q: not an A/B layout", agentwire.SlotVerityLabel(slot))
	case !haveESP && needESP:
		return nil, errors.New("no EFI system partition for the boot entries: not an A/B layout")
	}
	return &s, nil
}

// writeSlotImage streams the image into the root partition, never past its end.
func writeSlotImage(ctx context.Context, env *Env, f *os.File, o *slotArgs, off, size int64) (int64, error) {
	resp, err := env.Get(ctx, o.imageURL)
	if err != nil {
		return 0, err
	}
	etag := resp.Header.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		etag = ""
	}
	body := &resumingBody{ctx: ctx, body: resp.Body, etag: etag, total: resp.ContentLength,
		allow: true, backoff: resumeBackoff, logf: env.Logf,
		get: func(ctx context.Context, from int64, etag string) (io.ReadCloser, error) {
			r, err := env.getRange(ctx, o.imageURL, from, etag)
			if err != nil {
				return nil, err
			}
			return r.Body, nil
		}}
	defer body.Close()
	w := &partitionWriter{f: f, off: off, end: off + size}
	res, err := WriteImage(ctx, w, body, ImageOptions{Compression: o.compression, Total: resp.ContentLength, IdleTimeout: o.idle,
		Progress: func(read int64) { env.Progress(read, resp.ContentLength) }})
	if err == nil && res.SHA256 != o.sha256 {
		err = fmt.Errorf("sha256 mismatch: the download is %s, expected %s", res.SHA256, o.sha256)
	}
	return res.Written, err
}

// partitionWriter writes sequentially from off and refuses to pass end: an image
// larger than its partition must not spill into the next one.
type partitionWriter struct {
	f        *os.File
	off, end int64
}

func (w *partitionWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.end-w.off {
		return 0, permanent(errors.New("the image is larger than its slot partition"))
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

// wipeSlot zeroes the first MiB of each of the slot's partitions: a half-written
// root has no filesystem to mount and no superblock to set verity up with.
func wipeSlot(env *Env, f *os.File, slot string, offs []int64) {
	zero := make([]byte, 1<<20)
	for _, off := range offs {
		if _, err := f.WriteAt(zero, off); err != nil {
			env.Logf("could not wipe slot %s at byte %d: %v", slot, off, err)
			return
		}
	}
	if err := f.Sync(); err != nil {
		env.Logf("could not sync the wiped slot %s: %v", slot, err)
		return
	}
	env.Logf("wiped slot %s: it cannot be booted; the other slot and its boot entry are unchanged", slot)
}

// downloadBounded fetches a file of at most max bytes into memory and checks its
// sha256.
func downloadBounded(ctx context.Context, env *Env, url, want string, max int64) ([]byte, error) {
	resp, err := env.Get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redactURL(url), err)
	}
	if int64(len(b)) > max {
		return nil, permanent(fmt.Errorf("%s is larger than its partition (%s)", redactURL(url), agentwire.SizeText(max)))
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: download truncated: %d of %d bytes", redactURL(url), len(b), resp.ContentLength)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("sha256 mismatch: %s is %s, expected %s", redactURL(url), got, want)
	}
	return b, nil
}

// partitionDevice is the device of partition number n of a disk: the child of the
// disk in sysfs whose "partition" attribute is n (sda3, nvme0n1p3, loop0p3). It
// waits for it a few seconds, as partitions appear asynchronously. A regular file
// (tests) has no partition devices: its partitions are named disk#n, for a test's
// Mount to understand.
func (s *System) partitionDevice(ctx context.Context, tgt *target, n int) (string, error) {
	if !tgt.Block {
		return tgt.Path + "#" + strconv.Itoa(n), nil
	}
	deadline := time.Now().Add(10 * time.Second)
	dir := s.path("/sys/class/block/" + tgt.Name)
	for {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if v, ok := sysInt(filepath.Join(dir, e.Name(), "partition")); ok && v == int64(n) {
				return "/dev/" + e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("partition %d of %s has no device (no %s/*/partition = %d)", n, tgt.Path, dir, n)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// writeBootEntry mounts the ESP and writes the slot's systemd-boot entry.
func (s *System) writeBootEntry(esp string, o *slotArgs) (string, error) {
	dir, err := os.MkdirTemp("", "kiln-esp-")
	if err != nil {
		return "", err
	}
	defer os.Remove(dir)
	if _, err := s.mount(esp, dir, "vfat"); err != nil {
		return "", err
	}
	name, err := writeSlotEntry(dir, o)
	if uerr := s.unmount(dir); uerr != nil && err == nil {
		err = fmt.Errorf("unmount %s: %w", esp, uerr)
	}
	return name, err
}
