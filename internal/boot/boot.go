// Package boot serves what network-booting machines fetch over HTTP: the generic iPXE
// script, the per-machine script chosen by the machine's state, and artifacts
// (kernels, initrds, images) with Range and ETag support and hash verification.
//
// Nothing here is authenticated: first-stage boot cannot carry credentials, so nothing
// secret is served. Integrity comes from the artifacts' recorded sha256.
package boot

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/store"
)

// Inventory is what the boot server needs from the rest of Kiln.
type Inventory interface {
	// MachineByMAC returns store.ErrNotFound for an unknown MAC.
	MachineByMAC(ctx context.Context, mac string) (*resource.Object, error)
	Get(ctx context.Context, kind, name string) (*resource.Object, error)
	// AddEvent appends to a machine's timeline.
	AddEvent(ctx context.Context, e store.Event) error
	// SubnetFor returns the subnet containing ip, or store.ErrNotFound.
	SubnetFor(ctx context.Context, ip netip.Addr) (*resource.SubnetSpec, error)
}

// Policy for machines Kiln does not know.
type Policy struct {
	// DiscoveryProfile, if set, is booted by unknown machines; otherwise they are told to
	// exit iPXE (the firmware moves on to its next boot device).
	DiscoveryProfile string
	// FailedBootsAgent: a machine whose provisioning failed boots its profile again (for
	// debugging) instead of its local disk.
	FailedBootsAgent bool
}

// Server serves the boot endpoints.
type Server struct {
	Inventory Inventory
	Artifacts *ArtifactStore
	Policy    Policy
	Logger    *slog.Logger
	// AgentKernel and AgentInitrd are the artifacts a profile with boot.agent boots.
	AgentKernel, AgentInitrd string
	// AgentCmdline is appended for agent boots (server URL, CA fingerprint, ...).
	AgentCmdline string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics, optional.
	OnScript func(kind string)
	// Credentials, if set, returns what an agent boot of a known machine needs to
	// enroll (server URL, CA fingerprint and, when the machine awaits one and the
	// request comes from the address Kiln leased to it, its per-boot single-use join
	// token), appended to the kernel command line. remote is the request's source
	// address: the token is bound to it.
	Credentials func(ctx context.Context, machine, mac string, remote netip.Addr) (string, error)
	// CacheTTL is how long the profiles and artifacts a script names are reused
	// between requests (the machine is read for every request); 0:
	// DefaultCacheTTL, negative: not at all.
	CacheTTL time.Duration
	// AgentDeadline is how long after a UKI download the machine's agent must show
	// before an AgentMissing event (uki.go); 0: DefaultAgentDeadline, negative: no
	// watch.
	AgentDeadline time.Duration

	cacheMu sync.Mutex
	cache   map[string]cachedObject

	watchMu sync.Mutex
	watches map[string]*time.Timer // by machine
}

// DefaultCacheTTL is how long a boot script reuses the profiles and artifacts it
// read: a profile changed meanwhile is served within that time.
const DefaultCacheTTL = 2 * time.Second

type cachedObject struct {
	obj *resource.Object
	exp time.Time
}

// cachedGet reads an object the scripts share (a profile, an artifact), reusing a
// read younger than CacheTTL. The object returned is shared: callers do not change it.
func (s *Server) cachedGet(ctx context.Context, kind, name string) (*resource.Object, error) {
	ttl := s.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if ttl < 0 {
		return s.Inventory.Get(ctx, kind, name)
	}
	key := kind + "/" + name
	now := time.Now()
	s.cacheMu.Lock()
	c, ok := s.cache[key]
	s.cacheMu.Unlock()
	if ok && now.Before(c.exp) {
		return c.obj, nil
	}
	obj, err := s.Inventory.Get(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	if s.cache == nil || len(s.cache) >= 4096 {
		s.cache = map[string]cachedObject{}
	}
	s.cache[key] = cachedObject{obj: obj, exp: now.Add(ttl)}
	s.cacheMu.Unlock()
	return obj, nil
}

// Register adds the boot routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	mux.HandleFunc("GET /boot.ipxe", s.generic)
	mux.HandleFunc("GET /ipxe", s.perMachine)
	mux.HandleFunc("GET /artifacts/{name}", s.artifact)
	mux.HandleFunc("POST /phone-home", s.phoneHome)
	mux.HandleFunc("GET /phone-home", s.phoneHome)
	mux.HandleFunc("HEAD /artifacts/{name}", s.artifact)
	mux.HandleFunc("GET /uki/{file}", s.uki)
	mux.HandleFunc("HEAD /uki/{file}", s.uki)
}

// baseURL is the URL the machine reached us by, so scripts chain back the same way
// (a machine behind NAT or a relay uses the address it was given).
func baseURL(r *http.Request) string {
	return scheme(r) + "://" + r.Host
}

// scheme is how the request reached us: "https" or "http".
func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// generic is the script iPXE gets from DHCP: it chains to the per-machine script with
// what iPXE knows of the machine. ${mac:hexhyp} because ':' would need URL escaping;
// ${buildarch} and ${platform} tell x86_64/arm64 and pcbios/efi apart.
func (s *Server) generic(w http.ResponseWriter, r *http.Request) {
	script := "#!ipxe\n" +
		"echo Kiln: chaining to this machine's boot script\n" +
		"chain --autofree " + baseURL(r) + "/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&buildarch=${buildarch}&platform=${platform}&serial=${serial:uristring} || goto failed\n" +
		"exit\n" +
		":failed\n" +
		"echo Kiln: boot script request failed; retrying in 10 seconds\n" +
		"sleep 10\n" +
		"chain --autofree " + baseURL(r) + "/boot.ipxe\n"
	writeScript(w, script)
}

// Script kinds, reported in events and metrics.
const (
	ScriptInstall   = "install"
	ScriptLocal     = "local-disk"
	ScriptDiscovery = "discovery"
	ScriptIgnore    = "ignore"
)

func (s *Server) perMachine(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	mac, err := resource.NormalizeMAC(q.Get("mac"))
	if err != nil {
		http.Error(w, fmt.Sprintf("mac: %q is not a MAC address", q.Get("mac")), http.StatusBadRequest)
		return
	}
	m, err := s.Inventory.MachineByMAC(ctx, mac)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.Logger.Error("boot script: machine lookup", "mac", mac, "err", err)
		http.Error(w, "inventory unavailable", http.StatusServiceUnavailable)
		return
	}
	var script, kind string
	if m == nil {
		script, kind, err = s.unknownScript(ctx, r, mac)
	} else {
		script, kind, err = s.machineScript(ctx, r, m, mac)
	}
	if err != nil {
		s.Logger.Error("boot script", "mac", mac, "err", err)
		if m != nil {
			s.event(ctx, m.Metadata.Name, "BootScriptFailed", err.Error())
		}
		// iPXE shows the body; say what is wrong without internal detail.
		writeScript(w, "#!ipxe\necho Kiln cannot boot this machine: "+sanitizeEcho(err.Error())+"\nsleep 30\nreboot\n")
		return
	}
	if s.OnScript != nil {
		s.OnScript(kind)
	}
	if m != nil {
		s.event(ctx, m.Metadata.Name, "BootScript", fmt.Sprintf("served %s script to %s (%s %s) from %s over %s", kind, mac, knownBuildArch(q.Get("buildarch")), knownPlatform(q.Get("platform")), remoteIP(r), scheme(r)))
	}
	s.Logger.Info("boot script", "mac", mac, "machine", nameOf(m), "script", kind, "remote", remoteIP(r))
	writeScript(w, script)
}

func (s *Server) unknownScript(ctx context.Context, r *http.Request, mac string) (string, string, error) {
	profile := s.Policy.DiscoveryProfile
	// The subnet the request comes from may set its own policy.
	if ip, err := netip.ParseAddr(remoteIP(r)); err == nil {
		if sn, err := s.Inventory.SubnetFor(ctx, ip.Unmap()); err == nil {
			switch sn.UnknownMachines {
			case resource.UnknownDiscovery:
				profile = sn.DiscoveryProfile
			case resource.UnknownIgnore, resource.UnknownAllocate:
				profile = ""
			}
		}
	}
	if profile == "" {
		return "#!ipxe\necho Kiln: unknown machine " + mac + "; booting the next device\nexit\n", ScriptIgnore, nil
	}
	p, err := s.cachedGet(ctx, "Profile", profile)
	if err != nil {
		return "", "", fmt.Errorf("discovery profile %q: %w", profile, err)
	}
	sc, err := s.profileScript(ctx, r, nil, p, mac)
	return sc, ScriptDiscovery, err
}

// ScriptForMachine is the per-machine script for a machine identified another way
// than by MAC (a TLS client certificate): the request's ?mac= if the machine owns
// it, else the machine's first interface.
func (s *Server) ScriptForMachine(ctx context.Context, r *http.Request, m *resource.Object) (string, error) {
	spec, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return "", err
	}
	mac := ""
	if q, err := resource.NormalizeMAC(r.URL.Query().Get("mac")); err == nil {
		for _, i := range spec.Interfaces {
			if i.MAC == q {
				mac = q
			}
		}
	}
	if mac == "" && len(spec.Interfaces) > 0 {
		mac = spec.Interfaces[0].MAC
	}
	script, _, err := s.machineScript(ctx, r, m, mac)
	return script, err
}

func (s *Server) machineScript(ctx context.Context, r *http.Request, m *resource.Object, mac string) (string, string, error) {
	st := machineState(m)
	local := "#!ipxe\necho Kiln: " + m.Metadata.Name + " is " + st + "; booting from local disk\nexit\n"
	switch st {
	case resource.StateProvisioned:
		return local, ScriptLocal, nil
	case resource.StateFailed:
		if !s.Policy.FailedBootsAgent {
			return local, ScriptLocal, nil
		}
	}
	spec, err := resource.Typed[resource.MachineSpec](m)
	if err != nil {
		return "", "", err
	}
	if spec.Profile == "" {
		return local, ScriptLocal, nil
	}
	p, err := s.cachedGet(ctx, "Profile", spec.Profile)
	if err != nil {
		return "", "", fmt.Errorf("profile %q: %w", spec.Profile, err)
	}
	sc, err := s.profileScript(ctx, r, m, p, mac)
	return sc, ScriptInstall, err
}

func machineState(m *resource.Object) string {
	var st resource.MachineStatus
	if len(m.Status) > 0 {
		_ = jsonUnmarshal(m.Status, &st)
	}
	if st.State == "" {
		return resource.StateNew
	}
	return st.State
}

// TemplateData is what a profile's cmdline template sees.
type TemplateData struct {
	Machine   MachineData
	Profile   string
	ServerURL string
	MAC       string
}

// MachineData is the machine part of TemplateData; empty for unknown machines.
type MachineData struct {
	Name     string
	Labels   map[string]string
	IP       string
	Hostname string
}

func (s *Server) profileScript(ctx context.Context, r *http.Request, m *resource.Object, p *resource.Object, mac string) (string, error) {
	ps, err := resource.Typed[resource.ProfileSpec](p)
	if err != nil {
		return "", err
	}
	kernel, initrds, cmdline := ps.Boot.Kernel, ps.Boot.Initrds, ps.Boot.Cmdline
	if ps.Boot.Agent {
		if s.AgentKernel == "" {
			return "", fmt.Errorf("profile %q boots the agent but no agent environment is configured", p.Metadata.Name)
		}
		kernel, initrds = s.AgentKernel, []string{s.AgentInitrd}
		cmdline = strings.TrimSpace(cmdline + " " + s.AgentCmdline)
	}
	data := TemplateData{Profile: p.Metadata.Name, ServerURL: baseURL(r), MAC: mac}
	if m != nil {
		data.Machine = MachineData{Name: m.Metadata.Name, Labels: m.Metadata.Labels}
		if spec, err := resource.Typed[resource.MachineSpec](m); err == nil {
			for _, i := range spec.Interfaces {
				if i.MAC == mac {
					data.Machine.IP, data.Machine.Hostname = i.IP, i.Hostname
				}
			}
		}
	}
	rendered, err := renderCmdline(p.Metadata.Name, cmdline, data)
	if err != nil {
		return "", err
	}
	if ps.Boot.Agent {
		// BOOTIF tells the agent environment which NIC iPXE booted from.
		rendered = strings.TrimSpace(rendered + " BOOTIF=01-" + strings.ReplaceAll(mac, ":", "-"))
		if m != nil && s.Credentials != nil {
			remote, _ := netip.ParseAddr(remoteIP(r))
			cred, err := s.Credentials(ctx, m.Metadata.Name, mac, remote.Unmap())
			if err != nil {
				return "", fmt.Errorf("enrollment credentials: %w", err)
			}
			rendered += " " + cred
		}
	}
	// Check every artifact exists before telling iPXE to fetch it.
	for _, a := range append([]string{kernel}, initrds...) {
		if _, err := s.cachedGet(ctx, "Artifact", a); err != nil {
			return "", fmt.Errorf("artifact %q: %w", a, err)
		}
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "echo Kiln: booting %s with profile %s\n", sanitizeEcho(cmp.Or(data.Machine.Name, mac)), p.Metadata.Name)
	// initrd= names each initrd for the kernel: UEFI kernels (EFI stub) need it to find
	// initrds loaded by iPXE; BIOS kernels ignore it.
	args := ""
	for _, i := range initrds {
		args += " initrd=" + i
	}
	// ?mac= lets the artifact handler put the fetch on the machine's timeline.
	q := "?mac=" + strings.ReplaceAll(mac, ":", "-")
	fmt.Fprintf(&b, "kernel %s/artifacts/%s%s%s %s || goto failed\n", baseURL(r), url.PathEscape(kernel), q, args, rendered)
	for _, i := range initrds {
		fmt.Fprintf(&b, "initrd --name %s %s/artifacts/%s%s || goto failed\n", i, baseURL(r), url.PathEscape(i), q)
	}
	b.WriteString("boot || goto failed\n:failed\necho Kiln: boot failed; retrying in 10 seconds\nsleep 10\nchain --autofree " + baseURL(r) + "/boot.ipxe\n")
	return b.String(), nil
}

// cmdlineTemplates caches parsed command line templates by profile and text:
// parsing costs more than rendering, and a profile's template is the same for
// every machine that boots it.
var (
	cmdlineTemplates sync.Map     // profile + "\x00" + text -> *template.Template
	cmdlineCached    atomic.Int64 // entries; the cache is emptied beyond 1024 (edited profiles)
)

func renderCmdline(profile, tmpl string, data TemplateData) (string, error) {
	key := profile + "\x00" + tmpl
	var t *template.Template
	if v, ok := cmdlineTemplates.Load(key); ok {
		t = v.(*template.Template)
	} else {
		var err error
		t, err = template.New(profile).Option("missingkey=error").Parse(tmpl)
		if err != nil {
			return "", fmt.Errorf("profile %q: spec.boot.cmdline: %v", profile, err)
		}
		if cmdlineCached.Add(1) > 1024 {
			cmdlineTemplates.Clear()
			cmdlineCached.Store(1)
		}
		cmdlineTemplates.Store(key, t)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("profile %q: spec.boot.cmdline: %v", profile, err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\n\r") {
		return "", fmt.Errorf("profile %q: spec.boot.cmdline renders to more than one line", profile)
	}
	return out, nil
}

func (s *Server) event(ctx context.Context, machine, typ, msg string) {
	if machine == "" {
		return
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	if err := s.Inventory.AddEvent(ctx, store.Event{Machine: machine, Time: now().UTC(), Type: typ, Message: msg}); err != nil {
		s.Logger.Warn("record event", "machine", machine, "type", typ, "err", err)
	}
}

func writeScript(w http.ResponseWriter, script string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte(script))
}

// sanitizeEcho keeps a message printable by iPXE's echo: no newlines, no ${...} expansion.
func sanitizeEcho(s string) string {
	s = strings.NewReplacer("\n", " ", "\r", " ", "$", "", "#", "").Replace(s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func nameOf(m *resource.Object) string {
	if m == nil {
		return ""
	}
	return m.Metadata.Name
}

// phoneHome records that a booted environment reached Kiln: the last step of a netboot
// timeline. It is unauthenticated like the rest of first-stage boot, so it only records
// an event; it never changes a machine's state.
func (s *Server) phoneHome(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	mac, err := resource.NormalizeMAC(r.URL.Query().Get("mac"))
	if err != nil {
		http.Error(w, fmt.Sprintf("mac: %q is not a MAC address", r.URL.Query().Get("mac")), http.StatusBadRequest)
		return
	}
	m, err := s.Inventory.MachineByMAC(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		s.Logger.Info("phone-home from an unknown machine", "mac", mac, "remote", remoteIP(r))
		http.Error(w, "unknown machine", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "inventory unavailable", http.StatusServiceUnavailable)
		return
	}
	msg := fmt.Sprintf("%s phoned home from %s", mac, remoteIP(r))
	if v := safetext.Field(r.URL.Query().Get("msg"), maxPhoneHomeMsg); v != "" {
		msg += ": " + v
	}
	s.event(ctx, m.Metadata.Name, "PhoneHome", msg)
	s.Logger.Info("phone-home", "mac", mac, "machine", m.Metadata.Name, "remote", remoteIP(r))
	w.Write([]byte("ok\n"))
}

// maxPhoneHomeMsg caps the free text a phone-home puts on a timeline: anyone on the
// provisioning network can send one.
const maxPhoneHomeMsg = 256

// iPXE's ${buildarch} and ${platform} values (src/config/defaults/*.h and the
// arch/*/Makefile of ipxe.org's tree). Anything else comes from a host that is not
// running iPXE's generic script: the event says "other" instead of repeating it.
var (
	ipxeBuildArchs = []string{"i386", "x86_64", "arm32", "arm64", "riscv32", "riscv64", "loong64"}
	ipxePlatforms  = []string{"pcbios", "efi", "linux", "sbi"}
)

func knownBuildArch(v string) string { return knownOr(ipxeBuildArchs, v) }
func knownPlatform(v string) string  { return knownOr(ipxePlatforms, v) }

func knownOr(known []string, v string) string {
	if v == "" {
		return "-"
	}
	if slices.Contains(known, v) {
		return v
	}
	return "other"
}
