package enroll

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
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

// RecordRefusal writes a refusal's audit entry and, for a known machine, its timeline
// event ("EnrollRefused", or "EnrollAlert" for a sign of attack). It never records the
// token, only its id once verified.
func (s *Server) RecordRefusal(ctx context.Context, action string, ref *Refusal, remote string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	summary := fmt.Sprintf("%s (from %s)", ref.Reason, remote)
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
	err := s.st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: s.now(), Actor: "enroll", Action: act, Kind: kind, Name: name, Summary: truncate(summary, 1000)}); err != nil {
			return err
		}
		if ref.Machine == "" {
			return nil
		}
		if _, err := tx.Get(ctx, "Machine", ref.Machine); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: ref.Machine, Time: s.now(), Type: evType, Message: truncate(summary, 1000)})
	})
	l := s.log().With("action", act, "machine", ref.Machine, "token_id", ref.TokenID, "remote", remote, "reason", ref.Reason)
	if err != nil {
		l.Error("cannot record a refusal", "err", err)
	} else if ref.Alert {
		l.Warn("possible attack: refused")
	} else {
		l.Info("refused")
	}
}
