package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Builtins are the actions built into the agent, by type (resource.ActionTypes).
func Builtins() map[string]ActionFunc {
	return map[string]ActionFunc{
		"image2disk": image2disk,
		"image2slot": image2slot,
		"partition":  partition,
		"write-file": writeFile,
		"exec":       execAction,
		"reboot":     rebootAction,
		"poweroff":   poweroffAction,
		"kexec":      kexecAction,
	}
}

// rebootAction reports success, then syncs and reboots: the reboot ends the agent,
// so Kiln must know first. It is usually a workflow's last action, whose success
// makes the machine provisioned and its next boot the local disk.
func rebootAction(ctx context.Context, env *Env, args Args) error {
	env.Logf("rebooting once this result is reported")
	env.AfterReport(env.power().Reboot)
	return nil
}

// poweroffAction reports success, then syncs and powers off.
func poweroffAction(ctx context.Context, env *Env, args Args) error {
	env.Logf("powering off once this result is reported")
	env.AfterReport(env.power().PowerOff)
	return nil
}

// kexecAction downloads a kernel (and initrd), verifies them when sha256 sums are
// given, loads them with kexec_file_load and, once success is reported, boots them
// without going through the firmware. Arguments: kernelURL (or kernel), initrdURL
// (or initrd), cmdline, kernelSHA256, initrdSHA256. A kernel without kexec (or with
// it locked down) fails the action with a clear reason, before anything is reported.
func kexecAction(ctx context.Context, env *Env, args Args) error {
	kernelURL, err := firstString(args, "kernelURL", "kernel")
	if err != nil || kernelURL == "" {
		return permanent(errors.Join(err, errors.New("args.kernelURL: required")))
	}
	initrdURL, err := firstString(args, "initrdURL", "initrd")
	if err != nil {
		return permanent(err)
	}
	cmdline, err := args.String("cmdline")
	if err != nil {
		return permanent(err)
	}
	kernel, err := downloadTemp(ctx, env, kernelURL, args, "kernelSHA256")
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer kernel.Close()
	var initrd *os.File
	if initrdURL != "" {
		if initrd, err = downloadTemp(ctx, env, initrdURL, args, "initrdSHA256"); err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
		defer initrd.Close()
	}
	if err := env.power().KexecLoad(kernel, initrd, cmdline); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			return permanent(fmt.Errorf("kexec is not available in this kernel: %w", err))
		}
		return fmt.Errorf("kexec load: %w", err)
	}
	env.Logf("kernel loaded; booting it once this result is reported")
	env.AfterReport(env.power().Kexec)
	return nil
}

func firstString(args Args, keys ...string) (string, error) {
	for _, k := range keys {
		s, err := args.String(k)
		if err != nil || s != "" {
			return s, err
		}
	}
	return "", nil
}

// downloadTemp fetches url into an unlinked temporary file, checking the sha256
// in args[sumKey] when set.
func downloadTemp(ctx context.Context, env *Env, url string, args Args, sumKey string) (*os.File, error) {
	want, err := args.String(sumKey)
	if err != nil {
		return nil, permanent(err)
	}
	want = strings.ToLower(want)
	if want != "" && !isSHA256Hex(want) {
		return nil, permanent(fmt.Errorf("args.%s: %q is not 64 hex digits", sumKey, want))
	}
	resp, err := env.Get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	f, err := os.CreateTemp("", "kiln-download-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("download truncated: %d of %d bytes", n, resp.ContentLength)
	}
	if err == nil && want != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			err = fmt.Errorf("sha256 mismatch: the download is %s, expected %s", got, want)
		}
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("GET %s: %w", redactURL(url), err)
	}
	return f, nil
}
