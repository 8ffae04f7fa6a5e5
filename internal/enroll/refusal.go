package enroll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auditagg"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/store"
)

// Refusals: what a refused request is told, and how it is recorded.

// Refusal is a request Kiln refused: its status, a reason safe to show the client (it
// never contains the token), and what it concerns.
type Refusal struct {
	Status  int
	Reason  string
	Machine string // the machine concerned, when known: it gets a timeline event
	TokenID string // the token's id, once its signature verified
	Alert   bool   // a sign of attack (a per-boot token used twice)
	// partial: the refused enrollment wrote to its transaction before it was refused.
	partial bool
}

func (r *Refusal) Error() string { return r.Reason }

func refuse(status int, format string, a ...any) *Refusal {
	return &Refusal{Status: status, Reason: fmt.Sprintf(format, a...)}
}

// RecordRefusal records a refusal: an audit entry and, for a known machine, a
// timeline event ("EnrollRefused", or "EnrollAlert" for a sign of attack). Anyone can
// send refused requests, so they are aggregated (auditagg): the first of a kind
// (action, source, reason) in an interval is written at once, its repeats as one
// entry with their count when the interval ends or the server stops. It never
// records the token, only its id once verified.
func (s *Server) RecordRefusal(ctx context.Context, action string, ref *Refusal, remote string) {
	act := action + "-refused"
	evType := "EnrollRefused"
	if action != "enroll" {
		evType = "AgentRefused"
	}
	if ref.Alert {
		act, evType = action+"-alert", "EnrollAlert"
	}
	kind, name := "Machine", ref.Machine
	if name == "" && ref.TokenID != "" {
		kind, name = "JoinToken", ref.TokenID
	}
	if name == "" {
		kind, name = "Enrollment", "-"
	}
	key := auditagg.Key{
		Action: act, Source: remote, Reason: safetext.Field(ref.Reason, 300),
		Kind: kind, Name: name, Machine: ref.Machine, EventType: evType,
	}
	s.refusalAggregator().Note(ctx, key)
}

// refusalAggregator is the Server's refusal aggregator, set up on first use.
func (s *Server) refusalAggregator() *auditagg.Aggregator {
	s.refusalsOnce.Do(func() {
		s.refusals.Write = s.writeRefusal
		s.refusals.Now = s.now
		s.refusals.Interval = s.RefusalInterval
		s.refusals.OnError = func(r auditagg.Record, err error) {
			s.log().Error("cannot record a refusal", "action", r.Action, "machine", r.Machine, "remote", r.Source, "reason", r.Reason, "count", r.Count, "err", err)
		}
	})
	return &s.refusals
}

// FlushRefusals writes the counts of refusals still pending (at shutdown).
func (s *Server) FlushRefusals(ctx context.Context) { s.refusalAggregator().Sweep(ctx, true) }

// writeRefusal writes one aggregated refusal: "reason (from 10.0.0.5)" for the
// first of an interval, "x 1234 from 10.0.0.5 in 59.9s: reason" for its repeats.
func (s *Server) writeRefusal(ctx context.Context, r auditagg.Record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	summary := fmt.Sprintf("%s (from %s)", r.Reason, r.Source)
	if r.Repeat {
		summary = fmt.Sprintf("x %d from %s in %s: %s", r.Count, r.Source, r.Last.Sub(r.First).Round(time.Second), r.Reason)
	}
	now := s.now()
	err := s.st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "enroll", Action: r.Action, Kind: r.Kind, Name: r.Name, Summary: truncate(summary, 1000)}); err != nil {
			return err
		}
		if r.Machine == "" {
			return nil
		}
		if _, err := tx.Get(ctx, "Machine", r.Machine); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: r.Machine, Time: now, Type: r.EventType, Message: truncate(summary, 1000)})
	})
	if err != nil {
		return fmt.Errorf("record %s from %s: %w", r.Action, r.Source, err)
	}
	l := s.log().With("action", r.Action, "machine", r.Machine, "remote", r.Source, "reason", r.Reason, "count", r.Count)
	if strings.HasSuffix(r.Action, "-alert") {
		l.Warn("possible attack: refused")
	} else {
		l.Info("refused")
	}
	return nil
}
