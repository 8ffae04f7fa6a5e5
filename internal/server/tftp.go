package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/tftp"
)

// IPXEFiles maps the names DHCP hands to firmware to Debian's ipxe package files.
// The names are the ones every PXE guide uses, so existing DHCP servers pointed at
// Kiln's TFTP (proxy mode, relays) work unchanged.
var IPXEFiles = map[string]string{
	"undionly.kpxe": "undionly.kpxe", // legacy BIOS PXE: chainloads through the NIC's UNDI
	"ipxe.pxe":      "ipxe.pxe",
	"ipxe.efi":      "ipxe.efi",    // x86-64 UEFI, iPXE's own drivers
	"snponly.efi":   "snponly.efi", // x86-64 UEFI through the firmware's SNP driver
}

// resolveIPXEFiles turns the iPXE file map into absolute paths with symlinks
// resolved. Debian's /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi, which a
// root-confined open refuses; the operator configured this directory, so its links
// are trusted, while client-requested names stay confined to it.
func resolveIPXEFiles(dir string) map[string]string {
	out := make(map[string]string, len(IPXEFiles))
	for name, file := range IPXEFiles {
		p, err := filepath.EvalSymlinks(filepath.Join(dir, file))
		if err != nil {
			continue // absent here: requests for it get "file not found"
		}
		out[name] = p
	}
	return out
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
		Handler: tftp.DirHandler(s.cfg.IPXEDir, resolveIPXEFiles(s.cfg.IPXEDir)),
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
