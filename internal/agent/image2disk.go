package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kilnhq/kiln/internal/agentwire"
)

// Compression formats image2disk reads.
const (
	CompressionAuto = "auto"
	CompressionNone = "none"
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionXz   = "xz"
)

// DetectCompression tells the format of a stream from its first bytes (the formats'
// magic numbers: RFC 1952 2.3.1, RFC 8878 3.1.1, the .xz spec 2.1.1.1); anything
// else is raw. bzip2 and lz4 are recognised only to be refused clearly.
func DetectCompression(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressionGzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressionZstd
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return CompressionXz
	case bytes.HasPrefix(head, []byte("BZh")) && len(head) > 3 && head[3] >= '1' && head[3] <= '9':
		return "bzip2"
	case bytes.HasPrefix(head, []byte{0x04, 0x22, 0x4d, 0x18}):
		return "lz4"
	}
	return CompressionNone
}

func normalizeCompression(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", CompressionAuto:
		return CompressionAuto, nil
	case CompressionNone, "raw":
		return CompressionNone, nil
	case CompressionGzip, "gz":
		return CompressionGzip, nil
	case CompressionZstd, "zst":
		return CompressionZstd, nil
	case CompressionXz:
		return CompressionXz, nil
	}
	return "", fmt.Errorf("args.compression: %q is not one of auto, none, gzip, zstd, xz", s)
}

// image2disk streams an image over HTTP(S) onto a whole disk, decompressing it and
// computing the sha256 of what was downloaded as it goes. A download that fails,
// is cut short or does not match its sha256 fails the action, and the disk's first
// and last MiB (partition tables, boot sectors, GPT backup) are zeroed so that a
// half-written image cannot boot. Arguments:
//
//	disk         whole block device (/dev/sda, /dev/disk/by-id/...), or a
//	             DiskSelector ({type: ssd, minSize: 200G}); required
//	imageURL     the image (the server sets it from args.image); or url
//	sha256       of the file as served (compressed); required unless verify: false
//	compression  auto (by magic bytes, default), none, gzip, zstd, xz
//	idleTimeout  fail when no data arrives for this long (default 60s)
func image2disk(ctx context.Context, env *Env, args Args) error {
	disk, err := env.disk(args)
	if err != nil {
		return err
	}
	src, err := args.String("imageURL")
	if err == nil && src == "" {
		src, err = args.String("url")
	}
	if err != nil {
		return permanent(err)
	}
	if src == "" {
		return permanent(errors.New("args.imageURL: required (the server sets it from args.image, an Artifact's name)"))
	}
	want, err := args.String("sha256")
	if err != nil {
		return permanent(err)
	}
	want = strings.ToLower(strings.TrimPrefix(want, "sha256:"))
	verify, err := args.Bool("verify", true)
	if err != nil {
		return permanent(err)
	}
	if want == "" && verify {
		return permanent(errors.New("args.sha256: required to verify the image (record the artifact's sha256, or set verify: false)"))
	}
	if want != "" && !isSHA256Hex(want) {
		return permanent(fmt.Errorf("args.sha256: %q is not 64 hex digits", want))
	}
	comp, err := args.String("compression")
	if err != nil {
		return permanent(err)
	}
	if comp, err = normalizeCompression(comp); err != nil {
		return permanent(err)
	}
	idle, err := args.Duration("idleTimeout", 60*time.Second)
	if err != nil {
		return permanent(err)
	}

	tgt, err := env.checkWholeDisk(disk)
	if err != nil {
		return err
	}
	var f *os.File
	size := int64(-1)
	if tgt.Block {
		if f, err = openExclusive(disk); err != nil {
			return fmt.Errorf("open %s: %w", disk, err)
		}
		if size, err = blockDeviceSize(f); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", disk, err)
		}
	} else if f, err = os.OpenFile(disk, os.O_WRONLY, 0); err != nil {
		return fmt.Errorf("open %s: %w", disk, err)
	}
	defer f.Close()

	resp, err := env.Get(ctx, src)
	if err != nil {
		return err
	}
	// A broken connection resumes where it stopped (see resumingBody): with the
	// server's strong ETag, or without one when the sha256 check covers it.
	etag := resp.Header.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		etag = ""
	}
	body := &resumingBody{ctx: ctx, body: resp.Body, etag: etag, total: resp.ContentLength,
		allow: etag != "" || want != "", backoff: resumeBackoff, logf: env.Logf,
		get: func(ctx context.Context, off int64, etag string) (io.ReadCloser, error) {
			r, err := env.getRange(ctx, src, off, etag)
			if err != nil {
				return nil, err
			}
			return r.Body, nil
		}}
	defer body.Close()
	total := resp.ContentLength
	if total > 0 && size > 0 && total > size && (comp == CompressionNone) {
		return permanent(fmt.Errorf("image is %d bytes, larger than %s (%d bytes)", total, disk, size))
	}
	env.Logf("writing %s (%s) to %s (%s)", redactURL(src), agentwire.SizeText(total), disk, agentwire.SizeText(size))
	start := time.Now()
	res, err := WriteImage(ctx, f, body, ImageOptions{
		Compression: comp, Total: total, IdleTimeout: idle,
		Progress: func(read int64) { env.Progress(read, total) },
	})
	if err == nil && want != "" && res.SHA256 != want {
		err = fmt.Errorf("sha256 mismatch: the download is %s, expected %s", res.SHA256, want)
	}
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("fsync %s: %w", disk, err)
		}
	}
	if err != nil {
		if werr := wipeEnds(f, size); werr != nil {
			env.Logf("could not wipe %s after the failure: %v", disk, werr)
		} else {
			env.Logf("wiped the first and last MiB of %s: nothing half-written can boot", disk)
		}
		if tgt.Block {
			rereadPartitions(f)
		}
		return err
	}
	if tgt.Block {
		if err := rereadPartitions(f); err != nil {
			env.Logf("re-reading the partition table of %s: %v (partitions appear on the next boot)", disk, err)
		}
	}
	d := time.Since(start)
	rate := float64(res.Written) / d.Seconds() / (1 << 20)
	verified := "not verified (verify: false)"
	if want != "" {
		verified = "sha256 verified"
	}
	env.Logf("wrote %s (%s %s downloaded) in %s, %.0f MiB/s; %s", agentwire.SizeText(res.Written), agentwire.SizeText(res.Read), res.Compression, d.Round(time.Millisecond), rate, verified)
	env.SetMessage("wrote %s to %s in %s (%.0f MiB/s), %s", agentwire.SizeText(res.Written), disk, d.Round(time.Second), rate, verified)
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// wipeEnds zeroes the first and last MiB of a disk (size < 0: of a file, its current
// size) and syncs.
func wipeEnds(f *os.File, size int64) error {
	if size < 0 {
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
	}
	zero := make([]byte, 1<<20)
	first := zero
	if size > 0 && size < int64(len(zero)) {
		first = zero[:size]
	}
	if _, err := f.WriteAt(first, 0); err != nil {
		return err
	}
	if size > 2<<20 {
		if _, err := f.WriteAt(zero, size-int64(len(zero))); err != nil {
			return err
		}
	}
	return f.Sync()
}

// ImageOptions tunes WriteImage.
type ImageOptions struct {
	// Compression: auto, none, gzip, zstd or xz.
	Compression string
	// Total is the download's expected length (-1 unknown), for messages.
	Total int64
	// IdleTimeout fails a stream that delivers nothing for this long (0: none).
	IdleTimeout time.Duration
	// Progress is called with the bytes read so far, once per chunk.
	Progress func(read int64)
	// ChunkSize is the read and write unit (default 4 MiB).
	ChunkSize int
}

// ImageResult is what WriteImage did.
type ImageResult struct {
	Read        int64  // bytes downloaded
	Written     int64  // bytes written to the disk
	SHA256      string // of the downloaded bytes
	Compression string // as detected or given
}

// chunks in flight between the reader and the writer: enough for the two stages to
// overlap, few enough to keep the agent small (the page cache does the rest).
const imageChunks = 4

// WriteImage copies src (the download) to dst, decompressing it. Two stages run
// concurrently: one reads src into large chunks and hashes them, the other
// decompresses and writes. It returns after src is read to its end, so the hash
// covers the whole download; the caller compares it.
func WriteImage(ctx context.Context, dst io.Writer, src io.ReadCloser, o ImageOptions) (ImageResult, error) {
	size := o.ChunkSize
	if size <= 0 {
		size = 4 << 20
	}
	comp, err := normalizeCompression(o.Compression)
	if err != nil {
		return ImageResult{}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	free := make(chan []byte, imageChunks)
	for i := 0; i < imageChunks; i++ {
		free <- make([]byte, size)
	}
	full := make(chan []byte, imageChunks)
	rd := &chunkReader{full: full, free: free}
	var res ImageResult
	var readErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		res.Read, res.SHA256, readErr = readChunks(ctx, cancel, src, free, full, o)
	}()
	// Stop the reader however the writer ends: closing src unblocks a Read.
	stopReader := func(cause error) {
		cancel(cause)
		src.Close()
		for range full { // let the reader finish
		}
		wg.Wait()
	}

	// The first chunk tells the format.
	first, ok := <-full
	if !ok {
		wg.Wait()
		if readErr != nil {
			return res, readErr
		}
		if comp == CompressionAuto {
			comp = CompressionNone
		}
		res.Compression = comp
		return res, nil // an empty image: nothing to write
	}
	detected := DetectCompression(first)
	switch {
	case comp == CompressionAuto:
		comp = detected
	case comp != detected && detected != CompressionNone:
		stopReader(nil)
		return res, permanent(fmt.Errorf("args.compression is %s but the image starts like %s", comp, detected))
	}
	res.Compression = comp
	rd.cur, rd.buf = first, first

	var written int64
	switch comp {
	case CompressionNone:
		written, err = copyChunks(dst, rd)
	case CompressionGzip, CompressionZstd, CompressionXz:
		written, err = decompressTo(dst, rd, comp, size)
	default:
		err = permanent(fmt.Errorf("the image is %s-compressed, which image2disk does not read (use gzip, zstd or xz)", comp))
	}
	res.Written = written
	if err != nil {
		stopReader(err)
		if readErr != nil && !errors.Is(readErr, context.Canceled) {
			// The download failing (cut short, idle, timed out) is the cause: the
			// decompressor only saw its input end.
			return res, readErr
		}
		return res, err
	}
	// The decompressor may stop before the input ends (padding after the last
	// frame): read on, so the hash covers every downloaded byte.
	if _, err := io.Copy(io.Discard, rd); err != nil {
		stopReader(err)
		return res, err
	}
	wg.Wait()
	if readErr != nil {
		return res, readErr
	}
	return res, nil
}

// readChunks is the reading stage: fill chunks from src, hash them, pass them on.
func readChunks(ctx context.Context, cancel context.CancelCauseFunc, src io.ReadCloser, free <-chan []byte, full chan<- []byte, o ImageOptions) (int64, string, error) {
	h := sha256.New()
	var read int64
	var idle *time.Timer
	if o.IdleTimeout > 0 {
		idle = time.AfterFunc(o.IdleTimeout, func() {
			cancel(fmt.Errorf("no data for %s after %s", o.IdleTimeout, agentwire.SizeText(read)))
			src.Close()
		})
		defer idle.Stop()
	}
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return read, "", context.Cause(ctx)
		}
		buf = buf[:cap(buf)]
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = src.Read(buf[n:])
			n += m
			if m > 0 && idle != nil {
				idle.Reset(o.IdleTimeout)
			}
		}
		if n > 0 {
			h.Write(buf[:n])
			read += int64(n)
			if o.Progress != nil {
				o.Progress(read)
			}
			select {
			case full <- buf[:n]:
			case <-ctx.Done():
				return read, "", context.Cause(ctx)
			}
		}
		if err == io.EOF {
			if o.Total > 0 && read < o.Total {
				return read, "", fmt.Errorf("download truncated: %s of %s", agentwire.SizeText(read), agentwire.SizeText(o.Total))
			}
			return read, hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return read, "", cause
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return read, "", fmt.Errorf("download truncated after %s of %s: %w", agentwire.SizeText(read), agentwire.SizeText(o.Total), err)
			}
			return read, "", fmt.Errorf("download failed after %s: %w", agentwire.SizeText(read), err)
		}
	}
}

// chunkReader reads the chunks of the reading stage as one stream.
type chunkReader struct {
	full <-chan []byte
	free chan<- []byte
	cur  []byte // unread part of buf
	buf  []byte // current chunk, returned to free when consumed
}

func (r *chunkReader) next() bool {
	if r.buf != nil {
		r.free <- r.buf
		r.buf = nil
	}
	b, ok := <-r.full
	if !ok {
		return false
	}
	r.buf, r.cur = b, b
	return true
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if !r.next() {
			return 0, io.EOF
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// copyChunks writes raw chunks as they come: one write per chunk, no copy.
func copyChunks(dst io.Writer, r *chunkReader) (int64, error) {
	var n int64
	for {
		if len(r.cur) > 0 {
			m, err := dst.Write(r.cur)
			n += int64(m)
			if err != nil {
				return n, fmt.Errorf("write: %w", err)
			}
			r.cur = nil
		}
		if !r.next() {
			return n, nil
		}
	}
}

// decompressTo decompresses r into dst in writes of size bytes.
func decompressTo(dst io.Writer, r *chunkReader, comp string, size int) (int64, error) {
	var dec io.Reader
	switch comp {
	case CompressionGzip:
		g, err := gzip.NewReader(r)
		if err != nil {
			return 0, fmt.Errorf("gzip: %w", err)
		}
		defer g.Close()
		dec = g
	case CompressionZstd:
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(false))
		if err != nil {
			return 0, fmt.Errorf("zstd: %w", err)
		}
		defer z.Close()
		dec = z
	case CompressionXz:
		x, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return 0, fmt.Errorf("xz: %w", err)
		}
		dec = x
	}
	buf := make([]byte, size)
	var n int64
	for {
		// Fill the buffer by hand rather than with io.ReadFull, which would turn a
		// decompressor's io.ErrUnexpectedEOF (its input cut mid-stream) into a
		// harmless-looking short read.
		m := 0
		var err error
		for m < len(buf) && err == nil {
			var k int
			k, err = dec.Read(buf[m:])
			m += k
		}
		if m > 0 {
			w, werr := dst.Write(buf[:m])
			n += int64(w)
			if werr != nil {
				return n, fmt.Errorf("write: %w", werr)
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", comp, err)
		}
	}
}
