package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/config"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store"
)

// PublicConfigsLabel on a Profile lets its configs be served over plain HTTP (for
// Ignition fetching before any agent exists), as long as a rendered config refers to
// no secret at all. A profile field spec.configs.public: true does the same once the
// resource schema has it.
const PublicConfigsLabel = "kiln.dev/public-configs"

// Mode says how a render may use secrets.
type Mode int

const (
	// ModeDeliver renders for the machine over its mTLS channel: values are inlined,
	// handles issued, and every release is audited.
	ModeDeliver Mode = iota
	// ModePublic renders for plain HTTP: any reference to a secret is an error.
	ModePublic
	// ModePreview renders for an operator: secrets are masked, nothing is released.
	ModePreview
)

func (m Mode) channel() string {
	switch m {
	case ModeDeliver:
		return "mtls"
	case ModePublic:
		return "http"
	}
	return "preview"
}

// Masks stand in for secrets in previews: letters, digits and dashes only, so that
// they are valid wherever a value could be (JSON, YAML, URLs, command lines).
func maskValue(name string, version int64) string {
	return fmt.Sprintf("MASKED-SECRET-%s-v%d", name, version)
}

const maskedHandleID = "MASKED-HANDLE"

// RenderRequest asks for one config of one machine.
type RenderRequest struct {
	Machine string
	Target  config.Target
	Mode    Mode
	// BaseURL is Kiln's URL as the requester reached it: .ServerURL in templates, and
	// the base of handle URLs when the Service has no PublicURL.
	BaseURL string
	// Actor is who asks, for the audit: "machine:web-1", "token:abc".
	Actor string
}

// Release is one secret a rendered config carries.
type Release struct {
	Secret  string `json:"secret"`
	Version int64  `json:"version"`
	// Via is "inline" (the value is in the config) or "handle" (a single-use URL).
	Via       string     `json:"via"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// Rendered is a rendered, validated config.
type Rendered struct {
	Machine  string        `json:"machine"`
	Profile  string        `json:"profile"`
	Target   config.Target `json:"-"`
	Kind     string        `json:"kind"`
	Content  []byte        `json:"-"`
	Releases []Release     `json:"secrets"`
	// Public tells whether the profile lets this config be served over plain HTTP.
	Public bool `json:"public"`
}

// machineView is what a render reads from the store.
type machineView struct {
	machine *resource.Object
	mspec   *resource.MachineSpec
	profile *resource.Object
	pspec   *resource.ProfileSpec
	allowed []string // profile secrets this machine may receive
}

func loadMachineView(ctx context.Context, tx store.Tx, name string) (*machineView, error) {
	m, err := tx.Get(ctx, "Machine", name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("machine %q does not exist: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	ms, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return nil, err
	}
	if ms.Profile == "" {
		return nil, fmt.Errorf("machine %q has no profile, so no configs: %w", name, store.ErrNotFound)
	}
	p, err := tx.Get(ctx, "Profile", ms.Profile)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("profile %q of machine %q does not exist: %w", ms.Profile, name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	ps, err := resource.Typed[resource.ProfileSpec](p)
	if err != nil {
		return nil, err
	}
	mv := &machineView{machine: m, mspec: ms, profile: p, pspec: ps}
	for _, n := range ps.Secrets {
		obj, err := tx.Get(ctx, "Secret", n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if spec, err := resource.Typed[resource.SecretSpec](obj); err == nil && Allowed(spec, m) {
			mv.allowed = append(mv.allowed, n)
		}
	}
	return mv, nil
}

// ProfileAllowsPublic tells whether a profile's configs may be served over plain HTTP.
func ProfileAllowsPublic(p *resource.Object) bool {
	if p.Metadata.Labels[PublicConfigsLabel] == "true" {
		return true
	}
	var raw struct {
		Configs struct {
			Public bool `json:"public"`
		} `json:"configs"`
	}
	return json.Unmarshal(p.Spec, &raw) == nil && raw.Configs.Public
}

func (mv *machineView) data(baseURL string) config.Data {
	d := config.Data{
		Machine: config.Machine{
			Name:       mv.machine.Metadata.Name,
			Labels:     mv.machine.Metadata.Labels,
			Interfaces: mv.mspec.Interfaces,
		},
		Profile:   config.Profile{Name: mv.profile.Metadata.Name, Labels: mv.profile.Metadata.Labels},
		ServerURL: baseURL,
		Secrets:   mv.allowed,
	}
	if d.Machine.Labels == nil {
		d.Machine.Labels = map[string]string{}
	}
	if d.Profile.Labels == nil {
		d.Profile.Labels = map[string]string{}
	}
	if d.Secrets == nil {
		d.Secrets = []string{}
	}
	if len(mv.mspec.Interfaces) > 0 {
		i := mv.mspec.Interfaces[0]
		d.Machine.MAC, d.Machine.IP, d.Machine.Hostname = i.MAC, i.IP, i.Hostname
	}
	var st resource.MachineStatus
	if len(mv.machine.Status) > 0 && json.Unmarshal(mv.machine.Status, &st) == nil && st.Facts != nil {
		d.Machine.Facts = st.Facts
	} else {
		d.Machine.Facts = map[string]any{}
	}
	return d
}

// template returns the profile's template for t, or the default Kiln serves when a
// profile sets some cloud-init parts but not this one (NoCloud reads meta-data and
// user-data whatever the profile has).
func (mv *machineView) template(t config.Target) (string, error) {
	if s, ok := t.Template(mv.pspec.Configs); ok {
		return s, nil
	}
	if t.Kind == config.KindCloudInit && mv.pspec.Configs != nil && len(mv.pspec.Configs.CloudInit) > 0 {
		switch t.Part {
		case "meta-data":
			host := mv.machine.Metadata.Name
			for _, i := range mv.mspec.Interfaces {
				if i.Hostname != "" {
					host = i.Hostname
					break
				}
			}
			return "instance-id: kiln-" + mv.machine.Metadata.Name + "\nlocal-hostname: " + host + "\n", nil
		case "user-data", "vendor-data":
			return "", nil
		}
	}
	return "", fmt.Errorf("profile %q has no %s: %w", mv.profile.Metadata.Name, t.Path(), store.ErrNotFound)
}

// resolver implements config.Secrets for one render.
type resolver struct {
	s      *Service
	ctx    context.Context
	mv     *machineView
	mode   Mode
	target config.Target
	base   string // of handle URLs: https
	// baseErr is why there is no base (ErrNoHTTPS); a handle then fails to render.
	baseErr error

	values   map[string]string // name -> value, for repeated references
	releases []Release
	handles  []*store.SecretHandle
	denied   string // the secret refused, for the audit
	obtained bool   // a real value was decrypted
}

// check resolves a reference: listed by the profile, existing, released to the
// machine. It returns the newest version.
func (r *resolver) check(name string) (*store.SecretVersion, error) {
	if r.mode == ModePublic {
		return nil, fmt.Errorf("secret %q: %w (profile %q serves this config over plain HTTP)", name, ErrNotPublic, r.mv.profile.Metadata.Name)
	}
	if !slices.Contains(r.mv.pspec.Secrets, name) {
		return nil, invalid("secret %q is not listed in spec.secrets of profile %q (templates may use only the secrets their profile lists)", name, r.mv.profile.Metadata.Name)
	}
	var v *store.SecretVersion
	err := r.s.Store.View(r.ctx, func(tx store.Tx) error {
		var err error
		v, err = releasable(r.ctx, tx, name, r.mv.machine, r.s.now())
		return err
	})
	if errors.Is(err, ErrDenied) {
		r.denied = name
	}
	return v, err
}

func (r *resolver) Value(name string) (string, error) {
	if v, ok := r.values[name]; ok {
		return v, nil
	}
	v, err := r.check(name)
	if err != nil {
		return "", err
	}
	var value string
	if r.mode == ModePreview {
		value = maskValue(name, v.Version)
	} else {
		plain, err := r.s.Keys.open(v)
		if err != nil {
			return "", err
		}
		value = string(plain)
		r.obtained = true
	}
	r.values[name] = value
	r.releases = append(r.releases, Release{Secret: name, Version: v.Version, Via: "inline"})
	return value, nil
}

func (r *resolver) URL(name string, ttl time.Duration) (string, error) {
	v, err := r.check(name)
	if err != nil {
		return "", err
	}
	if r.baseErr != nil {
		return "", r.baseErr
	}
	if ttl == 0 {
		ttl = r.s.handleTTL()
	}
	if max := r.s.maxHandleTTL(); ttl > max {
		return "", invalid("secretURL %q: TTL %s is longer than the limit of %s", name, ttl, max)
	}
	exp := r.s.now().Add(ttl)
	rel := Release{Secret: name, Version: v.Version, Via: "handle", ExpiresAt: &exp}
	r.releases = append(r.releases, rel)
	if r.mode == ModePreview {
		return r.base + "/secret-handles/" + maskedHandleID + "-" + name, nil
	}
	id, hash, err := newHandleID()
	if err != nil {
		return "", err
	}
	r.handles = append(r.handles, &store.SecretHandle{IDHash: hash, Secret: name, Version: v.Version,
		Machine: r.mv.machine.Metadata.Name, Channel: r.target.String(), ExpiresAt: exp, CreatedAt: r.s.now()})
	return r.base + "/secret-handles/" + id, nil
}

func (s *Service) handleTTL() time.Duration {
	if s.HandleTTL > 0 {
		return s.HandleTTL
	}
	return DefaultHandleTTL
}

func (s *Service) maxHandleTTL() time.Duration {
	if s.MaxHandleTTL > 0 {
		return s.MaxHandleTTL
	}
	return DefaultMaxHandleTTL
}

// handleBase is the base of handle URLs: the first https one of HandleURL,
// PublicURL and the URL the request came in by. Never http: whoever reads a handle on
// the wire can redeem it before the machine does.
func (s *Service) handleBase(reqBase string) (string, error) {
	for _, b := range []string{s.HandleURL, s.PublicURL, reqBase} {
		if strings.HasPrefix(b, "https://") {
			return strings.TrimRight(b, "/"), nil
		}
	}
	return "", ErrNoHTTPS
}

// trustKiln adds Kiln's CA to a rendered Ignition or cloud-config (config.AddCA), so
// that its fetches from Kiln (handles are https) verify Kiln, and validates again.
func (s *Service) trustKiln(t config.Target, content []byte) ([]byte, error) {
	if len(s.CACertPEM) == 0 {
		return content, nil
	}
	out, err := config.AddCA(t, content, s.CACertPEM)
	if err != nil {
		return nil, err
	}
	if err := config.Validate(t, out); err != nil {
		return nil, fmt.Errorf("%s: with Kiln's CA added, the config does not validate: %w", t.Path(), err)
	}
	return out, nil
}

// errValueBreaksFormat replaces an error that only the real values cause: its text
// could quote part of a value (a JSON syntax error shows the character it stopped at).
var errValueBreaksFormat = errors.New("the config renders and validates with masked secrets but not with the real values: " +
	"a value breaks the format (quote it with toJson, or encode it with b64enc or dataURL)")

// RenderError is a template that does not render or a config that does not validate:
// the operator's to fix (the API answers 422). It never quotes a secret value.
type RenderError struct{ Err error }

func (e *RenderError) Error() string { return e.Err.Error() }
func (e *RenderError) Unwrap() error { return e.Err }

// asRenderError classifies a config.Render error: refusals keep their own meaning
// (denied, missing, not public, bad reference), the rest is the template's fault.
func asRenderError(err error) error {
	var ie *InputError
	switch {
	case errors.Is(err, ErrDenied), errors.Is(err, ErrNotPublic), errors.Is(err, store.ErrNotFound),
		errors.Is(err, ErrKeyUnavailable), errors.Is(err, ErrNoHTTPS), errors.As(err, &ie):
		return err
	}
	return &RenderError{Err: err}
}

// Render renders one config for a machine. In ModeDeliver the releases are audited
// (and handles stored) before the config is returned; if that fails, nothing is.
// Errors never quote a secret value: when a render that used real values fails, the
// message comes from the same render with masked values.
func (s *Service) Render(ctx context.Context, req RenderRequest) (*Rendered, error) {
	out, err := s.render(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("render %s for machine %q: %w", req.Target, req.Machine, err)
	}
	return out, nil
}

func (s *Service) render(ctx context.Context, req RenderRequest) (*Rendered, error) {
	var mv *machineView
	if err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		mv, err = loadMachineView(ctx, tx, req.Machine)
		return err
	}); err != nil {
		return nil, err
	}
	public := ProfileAllowsPublic(mv.profile)
	if req.Mode == ModePublic && !public {
		return nil, fmt.Errorf("profile %q does not serve configs over plain HTTP (label it %s=true if its configs hold no secret): %w",
			mv.profile.Metadata.Name, PublicConfigsLabel, ErrNotPublic)
	}
	text, err := mv.template(req.Target)
	if err != nil {
		return nil, err
	}
	opts := config.Options{MaxBytes: s.MaxConfigBytes}
	r := &resolver{s: s, ctx: ctx, mv: mv, mode: req.Mode, target: req.Target, values: map[string]string{}}
	r.base, r.baseErr = s.handleBase(req.BaseURL)
	opts.Secrets = r
	content, err := config.Render(req.Target, text, mv.data(req.BaseURL), opts)
	if err == nil {
		content, err = s.trustKiln(req.Target, content)
	}
	if err != nil {
		err = asRenderError(err)
		if r.obtained {
			// Say what is wrong from a masked render: it never saw a value.
			m := &resolver{s: s, ctx: ctx, mv: mv, mode: ModePreview, target: req.Target, base: r.base, baseErr: r.baseErr, values: map[string]string{}}
			opts.Secrets = m
			if _, merr := config.Render(req.Target, text, mv.data(req.BaseURL), opts); merr != nil {
				err = asRenderError(merr)
			} else {
				err = &RenderError{Err: errValueBreaksFormat}
			}
		}
		if req.Mode == ModeDeliver {
			s.recordRenderFailure(ctx, req, r.denied, err)
		}
		return nil, err
	}
	out := &Rendered{Machine: req.Machine, Profile: mv.profile.Metadata.Name, Target: req.Target, Kind: req.Target.String(),
		Content: content, Releases: r.releases, Public: public}
	if out.Releases == nil {
		out.Releases = []Release{}
	}
	if req.Mode == ModePreview {
		return out, nil
	}
	if err := s.recordDelivery(ctx, req, r); err != nil {
		return nil, fmt.Errorf("record the delivery (nothing was served): %w", err)
	}
	return out, nil
}

// recordDelivery stores the handles and audits every release of a served config, with
// one event on the machine's timeline.
func (s *Service) recordDelivery(ctx context.Context, req RenderRequest, r *resolver) error {
	machine := req.Machine
	return s.Store.Update(ctx, func(tx store.Tx) error {
		// Handles kept long past their expiry only serve late 410s: purge old ones here,
		// off the hot path's reads.
		if _, err := tx.PurgeSecretHandles(ctx, s.now().Add(-s.handleRetention())); err != nil {
			return err
		}
		for _, h := range r.handles {
			if err := tx.CreateSecretHandle(ctx, h); err != nil {
				return err
			}
		}
		var parts []string
		for _, rel := range r.releases {
			var err error
			if rel.Via == "inline" {
				err = s.audit(ctx, tx, req.Actor, "release", "Secret", rel.Secret,
					fmt.Sprintf("released secret %s v%d to machine %s via %s (%s config)", rel.Secret, rel.Version, machine, req.Mode.channel(), req.Target))
				parts = append(parts, fmt.Sprintf("%s v%d inline", rel.Secret, rel.Version))
			} else {
				err = s.audit(ctx, tx, req.Actor, "issue-handle", "Secret", rel.Secret,
					fmt.Sprintf("issued a single-use handle for secret %s v%d to machine %s via %s (%s config), expires %s",
						rel.Secret, rel.Version, machine, req.Mode.channel(), req.Target, rel.ExpiresAt.Format(time.RFC3339)))
				parts = append(parts, fmt.Sprintf("%s v%d handle", rel.Secret, rel.Version))
			}
			if err != nil {
				return err
			}
		}
		msg := fmt.Sprintf("served %s config over %s", req.Target, req.Mode.channel())
		if len(parts) > 0 {
			msg += " with secrets: " + strings.Join(parts, ", ")
		}
		return s.event(ctx, tx, machine, "ConfigServed", msg)
	})
}

func (s *Service) handleRetention() time.Duration {
	if s.HandleRetention > 0 {
		return s.HandleRetention
	}
	return DefaultHandleRetention
}

// recordRenderFailure puts a failed render on the machine's timeline, and a denied
// secret in the audit. It is best effort: the render already failed closed.
func (s *Service) recordRenderFailure(ctx context.Context, req RenderRequest, denied string, cause error) {
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "Machine", req.Machine); err != nil {
			return nil // no timeline to write on
		}
		if denied != "" {
			if err := s.audit(ctx, tx, req.Actor, "deny", "Secret", denied,
				fmt.Sprintf("denied secret %s to machine %s via %s (%s config): not in its release rules", denied, req.Machine, req.Mode.channel(), req.Target)); err != nil {
				return err
			}
		}
		return s.event(ctx, tx, req.Machine, "ConfigRenderFailed", fmt.Sprintf("%s config: %v", req.Target, cause))
	})
	if err != nil {
		s.log().Warn("record a failed render", "machine", req.Machine, "config", req.Target.String(), "err", err)
	}
}
