package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"

	"github.com/kilnhq/kiln/internal/httpjson"
)

// POST /enroll: the HTTP front of Server.Enroll.

// handleEnroll serves POST /enroll.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	remote := remoteAddr(r)
	fail := func(ref *Refusal) {
		s.RecordRefusal(r.Context(), "enroll", ref, remote.String())
		writeError(w, ref.Status, ref.Reason)
	}
	if r.TLS == nil {
		fail(refuse(http.StatusForbidden, "enrollment is HTTPS only: use Kiln's https:// URL"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			fail(refuse(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mb.Limit))
			return
		}
		fail(refuse(http.StatusBadRequest, "read body: %v", err))
		return
	}
	var req EnrollRequest
	var channel []byte
	if cb, err := r.TLS.ExportKeyingMaterial(ChannelBindingLabel, nil, channelBindingBytes); err == nil {
		channel = cb
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		fail(refuse(http.StatusBadRequest, "malformed JSON: %s", truncate(err.Error(), 200)))
		return
	}
	if dec.More() {
		fail(refuse(http.StatusBadRequest, "malformed JSON: data after the request object"))
		return
	}
	resp, err := s.enrollOnChannel(r.Context(), &req, channel, remote)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			fail(ref)
			return
		}
		s.log().Error("enroll", "remote", remote, "err", err)
		writeError(w, http.StatusServiceUnavailable, "enrollment failed on the server (store unavailable); retry later")
		return
	}
	if resp.pending != nil {
		writeJSON(w, http.StatusAccepted, resp.pending)
		return
	}
	resp.BoundConnection = bindConnection(r, resp)
	s.log().Info("enrolled", "machine", resp.Machine, "serial", resp.Serial, "remote", remote, "bound_connection", resp.BoundConnection)
	writeJSON(w, http.StatusOK, resp)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(r.RemoteAddr)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// ErrorResponse is the body of every error, as in the operator API.
type ErrorResponse = httpjson.ErrorResponse

var (
	writeError = httpjson.Error
	writeJSON  = httpjson.Write
)
