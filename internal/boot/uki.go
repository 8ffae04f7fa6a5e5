package boot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// UEFI HTTP boot of a Unified Kernel Image. DHCP hands a UEFI HTTP boot client of
// a machine whose profile has spec.boot.uki the URL /uki/<mac>.efi (dhcp's
// DefaultBooter); there is no iPXE script in between, so what the script would
// decide by the machine's state is decided here: a machine that should boot its
// profile gets the profile's UKI artifact (verified like any artifact: sha256 and,
// if configured, its signature), any other gets 404 and its firmware moves on to
// the next boot option (the local disk).
//
// The firmware's Secure Boot check happens after the download and tells Kiln
// nothing: a refused image looks like a machine that went quiet. So every UKI
// served starts a watch: if the machine's agent has not shown itself (enrolled,
// asked to, or reported) within AgentDeadline, the timeline gets an AgentMissing
// event naming the image.

// DefaultAgentDeadline is how long after a UKI download the agent must show.
const DefaultAgentDeadline = 5 * time.Minute

// agentEventTypes are the events that prove the agent ran on the machine.
var agentEventTypes = []string{"Enrolled", "EnrollmentPending", "EnrollmentApproved", "EnrollAlert", "FactsReported", "PhoneHome", "AgentForbidden", "CertificateRenewed"}

// eventReader is what the agent watch needs of the inventory.
type eventReader interface {
	Events(ctx context.Context, machine string, limit int) ([]store.Event, error)
}

// lister lets the watch find an enrollment request the agent made without a token:
// such a request names no machine (only an operator binds it), so it is on no
// timeline; its source address is the one the machine fetched its UKI from.
type lister interface {
	List(ctx context.Context, kind string, opts store.ListOptions) ([]*resource.Object, string, error)
}

// maxEnrollmentsScanned bounds the watch's look at enrollment requests (the store
// caps pending ones at 1,000 by default).
const maxEnrollmentsScanned = 5000

// pendingFrom reports whether an enrollment request from ip is pending.
func pendingFrom(ctx context.Context, l lister, ip string) (bool, error) {
	cont := ""
	for seen := 0; seen < maxEnrollmentsScanned; {
		objs, next, err := l.List(ctx, "Enrollment", store.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			return false, err
		}
		for _, o := range objs {
			if es, err := resource.Typed[resource.EnrollmentSpec](o); err == nil && es.State == "pending" && es.Source == ip {
				return true, nil
			}
		}
		seen += len(objs)
		if next == "" || len(objs) == 0 {
			break
		}
		cont = next
	}
	return false, nil
}

func (s *Server) uki(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	file := r.PathValue("file")
	mac, err := resource.NormalizeMAC(strings.TrimSuffix(file, ".efi"))
	if err != nil || !strings.HasSuffix(file, ".efi") {
		http.Error(w, fmt.Sprintf("%q is not <mac>.efi", file), http.StatusBadRequest)
		return
	}
	m, err := s.Inventory.MachineByMAC(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "unknown machine", http.StatusNotFound)
		return
	}
	if err != nil {
		s.Logger.Error("uki: machine lookup", "mac", mac, "err", err)
		http.Error(w, "inventory unavailable", http.StatusServiceUnavailable)
		return
	}
	name := m.Metadata.Name
	artifact, why, err := s.ukiFor(ctx, m)
	if err != nil {
		s.Logger.Error("uki", "machine", name, "err", err)
		s.event(ctx, name, "BootScriptFailed", "UKI: "+err.Error())
		http.Error(w, "this machine cannot boot a UKI now (see its timeline)", http.StatusInternalServerError)
		return
	}
	if artifact == "" {
		// Only the GET: the firmware sends HEAD first.
		if r.Method == http.MethodGet {
			s.event(ctx, name, "BootLocal", fmt.Sprintf("no UKI for %s: %s; the firmware boots its next device", mac, why))
		}
		http.Error(w, "no UKI for this machine: "+why, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/efi") // what HTTP boot reads first
	start := time.Now()
	if code := s.serveArtifact(w, r, artifact, name); code == http.StatusOK && r.Method == http.MethodGet {
		s.watchAgent(name, artifact, remoteIP(r), start)
	}
}

// ukiFor is the UKI artifact a machine boots now, or "" and why not.
func (s *Server) ukiFor(ctx context.Context, m *resource.Object) (string, string, error) {
	st := machineState(m)
	switch {
	case st == resource.StateProvisioned, st == resource.StateFailed && !s.Policy.FailedBootsAgent:
		return "", "machine is " + st, nil
	}
	spec, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return "", "", err
	}
	if spec.Profile == "" {
		return "", "machine has no profile", nil
	}
	p, err := s.cachedGet(ctx, "Profile", spec.Profile)
	if err != nil {
		return "", "", fmt.Errorf("profile %q: %w", spec.Profile, err)
	}
	ps, err := resource.Typed[resource.ProfileSpec](p)
	if err != nil {
		return "", "", err
	}
	if ps.Boot.UKI == "" {
		return "", fmt.Sprintf("profile %s has no spec.boot.uki", spec.Profile), nil
	}
	return string(ps.Boot.UKI), "", nil
}

// watchAgent records AgentMissing if the machine's agent does not show within
// AgentDeadline of a UKI download. A download while a watch is pending keeps that
// watch: a firmware that refuses the image may fetch it again and again, and each
// fetch must not push the alert further away.
func (s *Server) watchAgent(machine, artifact, remote string, served time.Time) {
	er, ok := s.Inventory.(eventReader)
	if !ok || s.AgentDeadline < 0 {
		return
	}
	deadline := s.AgentDeadline
	if deadline == 0 {
		deadline = DefaultAgentDeadline
	}
	s.watchMu.Lock()
	if s.watches == nil {
		s.watches = map[string]*time.Timer{}
	}
	if s.watches[machine] != nil {
		s.watchMu.Unlock()
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(deadline, func() {
		s.watchMu.Lock()
		if s.watches[machine] == timer {
			delete(s.watches, machine)
		}
		s.watchMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		evs, err := er.Events(ctx, machine, 200)
		if err != nil {
			s.Logger.Warn("agent watch: read the timeline", "machine", machine, "err", err)
			return
		}
		for _, e := range evs {
			if !e.Time.Before(served) && slices.Contains(agentEventTypes, e.Type) {
				return
			}
		}
		if l, ok := s.Inventory.(lister); ok {
			pending, err := pendingFrom(ctx, l, remote)
			if err != nil {
				s.Logger.Warn("agent watch: read enrollment requests", "machine", machine, "err", err)
			}
			if pending {
				return
			}
		}
		msg := fmt.Sprintf("booted artifact %s at %s, no agent within %s: the firmware may have refused the image (Secure Boot signature) or it did not start", artifact, served.UTC().Format(time.TimeOnly), deadline)
		s.Logger.Warn("agent missing after UKI boot", "machine", machine, "artifact", artifact, "deadline", deadline)
		s.event(ctx, machine, "AgentMissing", msg)
	})
	s.watches[machine] = timer
	s.watchMu.Unlock()
}

// StopWatches stops the pending agent watches (at shutdown).
func (s *Server) StopWatches() {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for m, t := range s.watches {
		t.Stop()
		delete(s.watches, m)
	}
}
