package server

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/inventory"
	"github.com/kilnhq/kiln/internal/store"
)

// registerIPXEFiles serves the iPXE binaries over HTTP(S) at the paths DHCP names for
// UEFI HTTP boot clients (dhcp.DefaultBooter: /ipxe.efi, /ipxe-arm64.efi) and the
// other IPXEFiles names, from the directories TFTP serves them from.
//
// OVMF's HTTP boot client (and the UEFI HttpBootDxe in most vendor firmware) sends
// HEAD first and refuses the boot ("Could not retrieve NBP file size from HTTP
// server") without a Content-Length; it then sends the GET on the same HTTP/1.1
// connection, so the connection must stay open after the HEAD. http.ServeContent
// answers both with Content-Length (and Range, If-Modified-Since), and net/http keeps
// the connection.
func (s *Server) registerIPXEFiles(mux *http.ServeMux, inv *inventory.Service) {
	files := resolveIPXEFiles(s.cfg.IPXEDirs)
	for name, path := range files {
		h := func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(path)
			if err != nil {
				s.log.Warn("open iPXE binary", "file", path, "err", err)
				http.Error(w, "not available", http.StatusNotFound)
				return
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				http.Error(w, "not available", http.StatusInternalServerError)
				return
			}
			// A weak validator from size and time: the binaries change only when the
			// package does.
			w.Header().Set("ETag", fmt.Sprintf(`W/"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
			w.Header().Set("Content-Type", "application/octet-stream")
			if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
				s.ipxeFileEvent(inv, r, name, fi.Size())
			}
			http.ServeContent(w, r, name, fi.ModTime(), f)
		}
		mux.HandleFunc("GET /"+name, h)
		mux.HandleFunc("HEAD /"+name, h)
	}
}

// ipxeFileEvent puts an HTTP download of an iPXE binary on the timeline of the machine
// holding the client's lease, as TFTP transfers are.
func (s *Server) ipxeFileEvent(inv *inventory.Service, r *http.Request, name string, size int64) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mach, err := inv.MachineByIP(ctx, ap.Addr().Unmap())
	if err != nil {
		return // not a known machine's lease
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	msg := fmt.Sprintf("%s over %s: %d bytes", name, scheme, size)
	if err := inv.AddEvent(ctx, store.Event{Machine: mach.Metadata.Name, Type: "HTTPBootFile", Message: msg}); err != nil {
		s.log.Warn("record http boot event", "machine", mach.Metadata.Name, "err", err)
	}
}

// publicOnlyWithoutForwardSecrecy refuses, on a TLS connection that negotiated RSA
// key exchange, everything but public boot files: the iPXE binaries, artifacts,
// machines' UKIs (/uki/, signed public images) and the generic /boot.ipxe (no token
// in it). Those suites are enabled only for UEFI
// firmware's HTTPS client (enroll.bootRSAKeyExchangeSuites); whoever records such a
// session and later obtains the server key reads it, so nothing that carries a token,
// a secret or an operator's credential may go over one.
func publicOnlyWithoutForwardSecrecy(next http.Handler) http.Handler {
	public := IPXEFiles()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && enroll.IsRSAKeyExchange(r.TLS.CipherSuite) {
			name := strings.TrimPrefix(r.URL.Path, "/")
			_, binary := public[name]
			ok := (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
				(binary || name == "boot.ipxe" || strings.HasPrefix(name, "artifacts/") || strings.HasPrefix(name, "uki/"))
			if !ok {
				http.Error(w, "this TLS connection has no forward secrecy (RSA key exchange): only public boot files are served on it", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
