package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/tftp"
)

// IPXEFiles maps the names DHCP hands to firmware to Debian's ipxe package files.
// The names are the ones every PXE guide uses, so existing DHCP servers pointed at
// Kiln's TFTP (proxy mode, relays) work unchanged. Debian 13's package names the
// x86-64 binary ipxe-amd64.efi with ipxe.efi a link to it; Debian 12's has ipxe.efi
// only and no arm64 binary.
func IPXEFiles() map[string][]string {
	return map[string][]string{
		"undionly.kpxe":  {"undionly.kpxe"}, // legacy BIOS PXE: chainloads through the NIC's UNDI
		"ipxe.pxe":       {"ipxe.pxe"},
		"ipxe.efi":       {"ipxe.efi", "ipxe-amd64.efi"}, // x86-64 UEFI, iPXE's own drivers
		"snponly.efi":    {"snponly.efi"},                // x86-64 UEFI through the firmware's SNP driver
		"ipxe-arm64.efi": {"ipxe-arm64.efi"},             // arm64 UEFI (Debian 13)
	}
}

// resolveIPXEFiles turns the iPXE file map into absolute paths with symlinks
// resolved, taking each name from the first directory that has it: Debian 13's
// binaries (HTTPS, arm64) where they were put first, Debian 12's as the fallback.
// Debian's /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi, which a
// root-confined open refuses; the operator configured these directories, so their
// links are trusted, while client-requested names stay confined to the first one.
func resolveIPXEFiles(dirs []string) map[string]string {
	out := map[string]string{}
	for name, files := range IPXEFiles() {
	search:
		for _, dir := range dirs {
			for _, file := range files {
				if p, err := filepath.EvalSymlinks(filepath.Join(dir, file)); err == nil {
					out[name] = p
					break search
				}
			}
		}
	}
	return out
}

// ipxeRoot is the directory TFTP serves names outside IPXEFiles from: the first
// configured one that exists.
func ipxeRoot(dirs []string) string {
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	if len(dirs) > 0 {
		return dirs[0]
	}
	return ""
}

// newTFTP builds the TFTP server for iPXE binaries. A finished transfer goes on the
// timeline of the machine holding the client's lease.
func (s *Server) newTFTP(inv *inventory.Service) *tftp.Server {
	m := &tftp.Metrics{}
	counters := []struct {
		name, help string
		v          func() uint64
	}{
		{"requests_total", "TFTP requests received.", m.Requests.Load},
		{"refused_total", "TFTP requests refused with an error packet.", m.Refused.Load},
		{"refused_busy_total", "TFTP requests refused with \"server busy\": a transfers cap was reached.", m.RefusedBusy.Load},
		{"refused_busy_address_total", "TFTP requests refused with \"server busy\" because their address reached the per-address cap.", m.RefusedBusyAddress.Load},
		{"transfers_completed_total", "TFTP transfers completed.", m.TransfersCompleted.Load},
		{"transfers_failed_total", "TFTP transfers failed (timeout, I/O, shutdown).", m.TransfersFailed.Load},
		{"transfers_aborted_total", "TFTP transfers aborted by the client.", m.TransfersAborted.Load},
		{"bytes_sent_total", "TFTP payload bytes sent.", m.BytesSent.Load},
		{"retransmits_total", "TFTP packets sent again.", m.Retransmits.Load},
		{"malformed_packets_total", "TFTP packets dropped as malformed.", m.MalformedPackets.Load},
	}
	for _, c := range counters {
		v := c.v
		s.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kiln_tftp_" + c.name, Help: c.help},
			func() float64 { return float64(v()) }))
	}
	return &tftp.Server{
		Handler: tftp.DirHandler(ipxeRoot(s.cfg.IPXEDirs), resolveIPXEFiles(s.cfg.IPXEDirs)),
		Logger:  s.log,
		Metrics: m,
		// Zero values take the tftp package's defaults.
		MaxTransfers:           s.cfg.TFTPMaxTransfers,
		MaxTransfersPerAddress: s.cfg.TFTPMaxTransfersPerAddress,
		FirstACKTimeout:        s.cfg.TFTPFirstACKTimeout,
		OnTransfer: func(r tftp.TransferResult) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			mach, err := inv.MachineByIP(ctx, r.Request.RemoteAddr.Addr().Unmap())
			if err != nil {
				return // not a known machine's lease: nothing to put on a timeline
			}
			typ, msg := "TFTPTransfer", fmt.Sprintf("%s: %d bytes in %s", r.Request.Filename, r.Bytes, r.Duration.Round(time.Millisecond))
			switch {
			case r.Aborted:
				typ, msg = "TFTPProbe", r.Request.Filename+": size probe aborted by the client"
			case r.Err != nil:
				typ, msg = "TFTPFailed", fmt.Sprintf("%s: %v", r.Request.Filename, r.Err)
			}
			if err := inv.AddEvent(ctx, store.Event{Machine: mach.Metadata.Name, Type: typ, Message: msg}); err != nil {
				s.log.Warn("record tftp event", "machine", mach.Metadata.Name, "err", err)
			}
		},
	}
}
