package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/workflow"
)

// Per-boot tokens: the join token an agent boot script carries. The script travels
// in clear and anyone on the provisioning network can ask for it, so the token is
// minted only when an operator put the machine into provisioning (a reprovision;
// machines in state new only with Config.BootTokensForNew), once per reprovision,
// and only to a request from the address Kiln's DHCP leased to the machine's MAC (or
// its reserved address). The token carries that address, and enrollment with it is
// accepted only from there (see Server.enroll). A second request for the same pending
// boot gets the same token, so asking again cannot supersede the machine's.

// Kernel command line parameters the agent reads.
const (
	CmdlineServer = "kiln.server"
	CmdlineCA     = "kiln.ca_fingerprint"
	CmdlineToken  = "kiln.token"
)

// bootAlertEvery is how often a script request from the wrong address is recorded
// for one machine and source address; the requests in between are counted.
const bootAlertEvery = time.Minute

// bootGrant is what a per-boot token's JoinToken status keeps of its claims. Ed25519
// signatures are deterministic: the same claims signed again are the same token, so a
// second script request for the same boot gets the token the first one got, and the
// token itself is never stored.
type bootGrant struct {
	// Run is what the token was minted for: "workflow <name>" (a reprovision) or "new".
	Run      string `json:"run"`
	Addr     string `json:"addr"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	Nonce    string `json:"nonce"`
}

// bootWithheld is why a script gets no per-boot token. alert: the request is a sign
// of attack (a machine awaiting its token, asked for from another address).
type bootWithheld struct {
	reason string
	alert  bool
}

// errMintNeeded stops MintBootToken's read transaction where a token must be written.
var errMintNeeded = errors.New("a new per-boot token must be minted")

func (w *bootWithheld) Error() string { return "no per-boot token: " + w.reason }

func withhold(alert bool, format string, a ...any) error {
	return &bootWithheld{reason: fmt.Sprintf(format, a...), alert: alert}
}

// bootTokenID names a machine's per-boot token: one object per machine, replaced at
// each reprovision, so per-boot tokens never pile up.
func bootTokenID(machine string) string {
	id := "boot-" + machine
	if len(id) > 253 {
		h := sha256.Sum256([]byte(machine))
		id = "boot-" + hex.EncodeToString(h[:16])
	}
	return id
}

// MintBootToken returns the per-boot join token of a machine's pending netboot, for a
// script request from remote: single use, bound to the machine, the MAC it boots from
// and remote, valid for ttl (0: the configured BootTokenTTL). The first request of a
// reprovision mints it; later ones get the same token. A *bootWithheld error says why
// the request gets none.
func (s *Server) MintBootToken(ctx context.Context, machineName, mac string, remote netip.Addr, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = s.cfg.BootTokenTTL
	}
	nmac, err := resource.NormalizeMAC(mac)
	if err != nil {
		return "", fmt.Errorf("mint boot token for %s: mac %q: not a MAC address", machineName, mac)
	}
	remote = remote.Unmap()
	now := s.now()
	id := bootTokenID(machineName)
	var tok string
	// mint decides in tx; only a new token is written, so with write false it stops
	// with errMintNeeded there. Most script requests withhold or re-sign a pending
	// token: they are answered from a read transaction and never wait for the
	// store's writer (DHCP's group commits and enrollment batches share it).
	mint := func(tx store.Tx, write bool) error {
		m, err := tx.Get(ctx, "Machine", machineName)
		if err != nil {
			return err
		}
		ms, err := resource.Typed[resource.MachineSpec](m)
		if err != nil {
			return err
		}
		if ms.Profile == "" {
			return withhold(false, "machine %s has no profile", machineName)
		}
		run, err := s.bootRun(ctx, tx, m)
		if err != nil {
			return err
		}
		if ok, err := leasedTo(ctx, tx, ms, nmac, remote, now); err != nil {
			return err
		} else if !ok {
			return withhold(true, "the script of machine %s (MAC %s) was asked for from %s, which is neither the address Kiln leased to that MAC nor its reserved address", machineName, nmac, remote)
		}
		cur, err := tx.Get(ctx, "JoinToken", id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if cur != nil {
			if t, err := s.pendingBootToken(cur, run, ms.Profile, nmac, machineName, remote, now); err != nil || t != "" {
				tok = t
				return err
			}
		}
		if !write {
			return errMintNeeded
		}
		exp := now.Add(ttl).Truncate(time.Second)
		var nonce [8]byte
		_, _ = rand.Read(nonce[:])
		g := &bootGrant{Run: run, Addr: remote.String(), IssuedAt: now.Unix(), Expires: exp.Unix(), Nonce: hex.EncodeToString(nonce[:])}
		if tok, err = signToken(s.ca.tokenKey, s.bootClaims(id, g, ms.Profile, nmac, machineName)); err != nil {
			return err
		}
		expS := time.Unix(g.Expires, 0).UTC()
		spec := resource.JoinTokenSpec{Profile: ms.Profile, MaxUses: 1, ExpiresAt: &expS, MACs: []string{nmac}, Machine: machineName, Hash: tokenHash(tok)}
		raw, _ := json.Marshal(spec)
		status, _ := json.Marshal(tokenStatus{Boot: g})
		labels := map[string]string{BootTokenLabel: "true"}
		if cur == nil {
			err = tx.Create(ctx, &resource.Object{Kind: "JoinToken", Metadata: resource.Metadata{Name: id, Labels: labels}, Spec: raw, Status: status})
		} else {
			next := cur.Clone()
			next.Spec, next.Status, next.Metadata.Labels = raw, status, labels
			err = tx.Update(ctx, next)
		}
		if err != nil {
			return err
		}
		return tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "boot", Action: "mint-boot-token", Kind: "JoinToken", Name: id,
			Summary: fmt.Sprintf("per-boot token for machine %s (%s), mac %s, address %s, single use, expires %s", machineName, run, nmac, remote, expS.Format(time.RFC3339))})
	}
	err = s.st.View(ctx, func(tx store.Tx) error { return mint(tx, false) })
	if errors.Is(err, errMintNeeded) {
		// Decided again in the write transaction: another request may have minted
		// meanwhile, and then this one re-signs that token instead.
		err = s.st.Update(ctx, func(tx store.Tx) error { return mint(tx, true) })
	}
	if err != nil {
		var w *bootWithheld
		if errors.As(err, &w) {
			return "", w
		}
		return "", fmt.Errorf("mint boot token for %s: %w", machineName, err)
	}
	return tok, nil
}

// bootRun names what a per-boot token may be minted for: the machine's running
// workflow if an operator reprovisioned it, "new" for a machine in state new if
// Config.BootTokensForNew allows it; else the script gets no token.
func (s *Server) bootRun(ctx context.Context, tx store.Tx, m *resource.Object) (string, error) {
	switch st := machineCertStatus(m).State; st {
	case resource.StateProvisioning:
		wf, _, err := workflow.Current(ctx, tx, m.Metadata.Name)
		if errors.Is(err, store.ErrNotFound) {
			return "", withhold(false, "machine %s is provisioning but has no running workflow", m.Metadata.Name)
		}
		if err != nil {
			return "", fmt.Errorf("read the workflow of machine %s: %w", m.Metadata.Name, err)
		}
		return "workflow " + wf.Metadata.Name, nil
	case resource.StateNew, "":
		if !s.cfg.BootTokensForNew {
			return "", withhold(false, "machine %s is new: per-boot tokens are minted for an operator's reprovision (kiln machine reprovision), or for new machines with --boot-tokens-for-new", m.Metadata.Name)
		}
		return "new", nil
	default:
		return "", withhold(false, "machine %s is %s, not provisioning", m.Metadata.Name, st)
	}
}

// pendingBootToken returns the token already minted for run, signed again from its
// stored claims, or "" when there is none to reuse (another run, or, for a new
// machine, an expired one). A token of this run that is spent, expired, revoked or
// bound to another address is withheld: a run mints one token, never a second.
func (s *Server) pendingBootToken(cur *resource.Object, run, profile, mac, machine string, remote netip.Addr, now time.Time) (string, error) {
	var ts tokenStatus
	if len(cur.Status) > 0 {
		_ = json.Unmarshal(cur.Status, &ts)
	}
	g := ts.Boot
	if g == nil || g.Run != run {
		return "", nil
	}
	spec, err := resource.Typed[resource.JoinTokenSpec](cur)
	if err != nil {
		return "", err
	}
	exp := time.Unix(g.Expires, 0).UTC()
	switch {
	case g.Addr != remote.String():
		return "", withhold(true, "the script of machine %s (MAC %s) was asked for from %s; its pending boot's token is bound to %s", machine, mac, remote, g.Addr)
	case ts.Uses > 0:
		return "", withhold(false, "the per-boot token of %s was used (by %s); reprovision the machine for a new one", run, ts.LastMachine)
	case spec.Revoked || ts.RevokedAt != nil:
		return "", withhold(false, "the per-boot token of %s is revoked; reprovision the machine for a new one", run)
	case !now.Before(exp):
		if run == "new" {
			return "", nil
		}
		return "", withhold(false, "the boot window of %s closed at %s; reprovision the machine for a new one", run, exp.Format(time.RFC3339))
	}
	tok, err := signToken(s.ca.tokenKey, s.bootClaims(cur.Metadata.Name, g, profile, mac, machine))
	if err != nil {
		return "", err
	}
	if tokenHash(tok) != spec.Hash {
		// The profile or the server URL changed since: the stored token is not this.
		return "", withhold(false, "the per-boot token of %s was minted for another profile or server URL; reprovision the machine for a new one", run)
	}
	return tok, nil
}

// bootClaims are a per-boot token's claims: the same grant gives the same claims.
func (s *Server) bootClaims(id string, g *bootGrant, profile, mac, machine string) *Claims {
	return &Claims{ID: id, Issuer: s.cfg.PublicURL, IssuedAt: g.IssuedAt, NotBefore: g.IssuedAt, Expires: g.Expires, Nonce: g.Nonce,
		Scope: Scope{Profile: profile, MACs: []string{mac}, Machine: machine, Boot: true, Addr: g.Addr}}
}

// leasedTo reports whether remote is where Kiln sent the machine's MAC: the address
// of an active lease Kiln's DHCP server gave that MAC, or the interface's reserved
// address.
func leasedTo(ctx context.Context, tx store.Tx, ms *resource.MachineSpec, mac string, remote netip.Addr, now time.Time) (bool, error) {
	if !remote.IsValid() {
		return false, nil
	}
	for _, i := range ms.Interfaces {
		if ip, err := netip.ParseAddr(i.IP); err == nil && i.MAC == mac && ip.Unmap() == remote {
			return true, nil
		}
	}
	l, err := tx.Get(ctx, "Lease", remote.String())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the lease of %s: %w", remote, err)
	}
	ls, err := resource.Typed[resource.LeaseSpec](l)
	if err != nil {
		return false, nil
	}
	lmac, _ := resource.NormalizeMAC(ls.MAC)
	return lmac == mac && ls.State == resource.LeaseBound && ls.ExpiresAt != nil && now.Before(*ls.ExpiresAt), nil
}

// BootCmdline returns the kernel command line fragment of an agent boot script asked
// for from remote: the server URL and the CA fingerprint, and the machine's per-boot
// token when MintBootToken allows it:
// "kiln.server=https://... kiln.ca_fingerprint=<hex> [kiln.token=<jwt>]". Without a
// token the agent enrolls without one (the approval path). A request from the wrong
// address is recorded as an alert (at most one per machine and address a minute).
func (s *Server) BootCmdline(ctx context.Context, machineName, mac string, remote netip.Addr) (string, error) {
	if s.cfg.PublicURL == "" {
		return "", errors.New("boot credentials: no public HTTPS URL configured for enrollment")
	}
	// Tokens are base64url and dots, the URL and fingerprint have no spaces: nothing
	// here needs quoting on a kernel command line.
	line := fmt.Sprintf("%s=%s %s=%s", CmdlineServer, s.cfg.PublicURL, CmdlineCA, s.ca.fingerprint)
	tok, err := s.MintBootToken(ctx, machineName, mac, remote, 0)
	var w *bootWithheld
	switch {
	case errors.As(err, &w):
		if w.alert {
			s.alertWithheld(ctx, machineName, remote, w.reason)
		} else {
			s.log().Info("boot script without a per-boot token", "machine", machineName, "mac", mac, "remote", remote, "reason", w.reason)
		}
		return line, nil
	case err != nil:
		return "", err
	}
	return line + " " + CmdlineToken + "=" + tok, nil
}

// bootAlerts counts script requests from the wrong address per machine and source,
// so that a flood of them writes one audit entry and event a minute, with a count.
type bootAlerts struct {
	mu sync.Mutex
	m  map[string]*bootAlertWindow
}

type bootAlertWindow struct {
	recorded   time.Time // when the last alert was written
	suppressed int       // requests since, not written
}

// note counts a request and says whether to write an alert now, and for how many
// requests (this one and those suppressed since the last alert).
func (b *bootAlerts) note(key string, now time.Time) (write bool, requests int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil || len(b.m) >= 4096 {
		for k, w := range b.m {
			if now.Sub(w.recorded) >= bootAlertEvery {
				delete(b.m, k)
			}
		}
		if b.m == nil || len(b.m) >= 4096 {
			b.m = map[string]*bootAlertWindow{}
		}
	}
	w := b.m[key]
	if w != nil && now.Sub(w.recorded) < bootAlertEvery {
		w.suppressed++
		return false, 0
	}
	n := 1
	if w != nil {
		n += w.suppressed
	}
	b.m[key] = &bootAlertWindow{recorded: now}
	return true, n
}

// alertWithheld records a script request refused its token as a sign of attack: an
// EnrollAlert event on the machine's timeline and a boot-token-alert audit entry.
func (s *Server) alertWithheld(ctx context.Context, machine string, remote netip.Addr, reason string) {
	now := s.now()
	write, n := s.bootAlerts.note(machine+"|"+remote.String(), now)
	l := s.log().With("machine", machine, "remote", remote, "reason", reason)
	if !write {
		l.Debug("possible attack: boot script without token (alert already recorded this minute)")
		return
	}
	requests := "1 script request"
	if n > 1 {
		requests = fmt.Sprintf("%d script requests", n)
	}
	msg := fmt.Sprintf("possible attack: %s; the script was served without a per-boot token (%s from %s since the last alert)", reason, requests, remote)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := s.st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendAudit(ctx, &audit.Entry{Time: now, Actor: "boot", Action: "boot-token-alert", Kind: "Machine", Name: machine, Summary: truncate(msg, 1000)}); err != nil {
			return err
		}
		return tx.AddEvent(ctx, &store.Event{Machine: machine, Time: now, Type: "EnrollAlert", Message: truncate(msg, 1000)})
	})
	if err != nil {
		l.Error("cannot record a boot token alert", "err", err)
		return
	}
	l.Warn("possible attack: boot script asked for from the wrong address", "requests", n)
}
