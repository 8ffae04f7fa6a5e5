package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// Redfish is DMTF DSP0266 (protocol) with the DSP0268 schemas. Only what power
// control, boot override and virtual media need is read; everything else in a
// response is ignored, so OEM additions never break parsing.

const serviceRootPath = "/redfish/v1/"

// defaultResetTypes is assumed when a BMC lists its ResetTypes nowhere (no inline
// AllowableValues, no @Redfish.ActionInfo, or an ActionInfo that is not there). It
// holds the values virtually every BMC implements; PowerCycle is deliberately not
// assumed, so such a BMC gets ForceOff + On for a cycle.
var defaultResetTypes = []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart"}

type redfish struct {
	addr       string   // host[:port], for messages
	base       *url.URL // scheme://host[:port]
	systemPath string   // from the address, or discovered
	user       string
	password   string
	opts       Options
	log        *slog.Logger
	transport  *http.Transport
	client     *http.Client

	connected    bool
	sessionsPath string // "" when the BMC has no SessionService
	token        string // X-Auth-Token of our session
	sessionPath  string // our session's URI, deleted by Close
	basic        bool   // basic auth instead of a session
	resetTypes   []string
	resetSource  string // where resetTypes came from, for messages
	bootMode     string // BootSourceOverrideMode to ask for: "UEFI", "Legacy" or ""
}

func newRedfish(bmc resource.BMC, user, password string, opts Options) (*redfish, error) {
	base, systemPath, err := parseRedfishAddress(bmc.Address, opts.AllowHTTP)
	if err != nil {
		return nil, err
	}
	tlsConf, err := bmcTLSConfig(bmc.CAFingerprint, opts.RootCAs)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 nil, // BMCs sit on management networks; never route credentials through a proxy
		DialContext:           (&net.Dialer{Timeout: opts.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   opts.RequestTimeout,
		ResponseHeaderTimeout: opts.RequestTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	return &redfish{
		bootMode:   map[string]string{"uefi": "UEFI", "legacy": "Legacy"}[bmc.BootMode],
		addr:       base.Host,
		base:       base,
		systemPath: systemPath,
		user:       user,
		password:   password,
		opts:       opts,
		log:        opts.Logger.With("bmc", base.Host, "driver", "redfish"),
		transport:  tr,
		client: &http.Client{
			Transport: tr,
			// A redirect could take the session token or basic credentials to
			// another host; Redfish services do not redirect API calls.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// parseRedfishAddress accepts https://host[:port], a bare host[:port] (https is
// assumed), and optionally the path of one ComputerSystem
// (https://bmc/redfish/v1/Systems/2) to pick it on a multi-system BMC.
func parseRedfishAddress(addr string, allowHTTP bool) (*url.URL, string, error) {
	s := strings.TrimSpace(addr)
	if s == "" {
		return nil, "", fmt.Errorf("%w: spec.bmc.address: required", ErrConfig)
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		// The parser's message quotes the address, which may hold a password.
		return nil, "", fmt.Errorf("%w: spec.bmc.address: not a URL", ErrConfig)
	}
	if u.User != nil {
		return nil, "", fmt.Errorf("%w: spec.bmc.address: must not carry credentials; use spec.bmc.credentialsSecret", ErrConfig)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP {
			return nil, "", fmt.Errorf("%w: spec.bmc.address: http:// would send BMC credentials in the clear; use https", ErrConfig)
		}
	default:
		return nil, "", fmt.Errorf("%w: spec.bmc.address: scheme %q is not https", ErrConfig, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, "", fmt.Errorf("%w: spec.bmc.address: no host", ErrConfig)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("%w: spec.bmc.address: must not have a query or fragment", ErrConfig)
	}
	var systemPath string
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	switch {
	case p == "" || p == "/redfish/v1":
	case strings.HasPrefix(p, "/redfish/v1/Systems/") && !strings.Contains(strings.TrimPrefix(p, "/redfish/v1/Systems/"), "/"):
		systemPath = p
	default:
		return nil, "", fmt.Errorf("%w: spec.bmc.address: path %q is neither /redfish/v1 nor /redfish/v1/Systems/<id>", ErrConfig, p)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, systemPath, nil
}

// ---- power -------------------------------------------------------------------------

func (r *redfish) getSystem(ctx context.Context) (*computerSystem, string, error) {
	if err := r.connect(ctx); err != nil { // discovers systemPath
		return nil, "", err
	}
	resp, err := r.call(ctx, http.MethodGet, r.systemPath, nil, "", http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	sys, err := parseSystem(resp.body)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", r.systemPath, err)
	}
	etag := resp.header.Get("ETag")
	if etag == "" {
		etag = sys.ETag
	}
	return sys, etag, nil
}

func (r *redfish) Status(ctx context.Context) (State, error) {
	sys, _, err := r.getSystem(ctx)
	if err != nil {
		return StateUnknown, r.wrap("status", err)
	}
	if sys.PowerState == "" {
		return StateUnknown, r.wrap("status", fmt.Errorf("%w: GET %s: no PowerState", ErrMalformed, r.systemPath))
	}
	return redfishState(sys.PowerState), nil
}

// allowedResets returns the ResetTypes the BMC lists: inline AllowableValues, else
// the ActionInfo resource, else a cautious default.
func (r *redfish) allowedResets(ctx context.Context, sys *computerSystem) ([]string, error) {
	if r.resetTypes != nil {
		return r.resetTypes, nil
	}
	a := sys.Actions.Reset
	switch {
	case len(a.Allowed) > 0:
		r.resetTypes, r.resetSource = a.Allowed, "ResetType@Redfish.AllowableValues"
	case a.ActionInfo != "":
		resp, err := r.call(ctx, http.MethodGet, a.ActionInfo, nil, "", http.StatusOK)
		var se *statusError
		switch {
		case errors.As(err, &se) && se.status == http.StatusNotFound:
			r.resetTypes, r.resetSource = defaultResetTypes, "assumed; "+a.ActionInfo+" not found"
		case err != nil:
			return nil, err
		default:
			types, err := resetTypesFromActionInfo(resp.body)
			if err != nil {
				return nil, fmt.Errorf("GET %s: %w", a.ActionInfo, err)
			}
			if len(types) == 0 {
				r.resetTypes, r.resetSource = defaultResetTypes, "assumed; "+a.ActionInfo+" lists none"
			} else {
				r.resetTypes, r.resetSource = types, a.ActionInfo
			}
		}
	default:
		r.resetTypes, r.resetSource = defaultResetTypes, "assumed; the BMC lists none"
	}
	return r.resetTypes, nil
}

// reset posts ComputerSystem.Reset with the first of candidates the BMC allows.
func (r *redfish) reset(ctx context.Context, sys *computerSystem, candidates ...string) (string, error) {
	target := sys.Actions.Reset.Target
	if target == "" {
		return "", fmt.Errorf("%w: %s has no #ComputerSystem.Reset action", ErrUnsupported, r.systemPath)
	}
	allowed, err := r.allowedResets(ctx, sys)
	if err != nil {
		return "", err
	}
	i := slices.IndexFunc(candidates, func(c string) bool { return slices.Contains(allowed, c) })
	if i < 0 {
		return "", fmt.Errorf("%w: ResetType %s is not allowed (allowable: %s; %s)",
			ErrUnsupported, strings.Join(candidates, " or "), strings.Join(allowed, ", "), r.resetSource)
	}
	rt := candidates[i]
	resp, err := r.call(ctx, http.MethodPost, target, map[string]string{"ResetType": rt}, "",
		http.StatusOK, http.StatusAccepted, http.StatusNoContent)
	if err != nil {
		return "", fmt.Errorf("ResetType %s: %w", rt, err)
	}
	if loc := resp.header.Get("Location"); resp.status == http.StatusAccepted && loc != "" {
		if err := r.followTask(ctx, loc); err != nil {
			return "", fmt.Errorf("ResetType %s: %w", rt, err)
		}
	}
	r.log.Debug("redfish reset", "resetType", rt)
	return rt, nil
}

// redfishTask is what a task monitor answers once the task has ended (Redfish
// DSP0266 13.2, Task).
type redfishTask struct {
	TaskState  string
	TaskStatus string
	Messages   []struct{ Message string }
}

// followTask polls a task monitor (the Location of a 202 Accepted) every
// PollInterval, for at most StateTimeout, until the task ends: 202 means still
// running; 200 with a Task says how it ended (Exception, Killed or Cancelled
// fail with the BMC's messages); 204, or a monitor that is gone (404, as BMCs
// delete it once the task is done), mean done.
func (r *redfish) followTask(ctx context.Context, monitor string) error {
	wctx, cancel := context.WithTimeout(ctx, r.opts.StateTimeout)
	defer cancel()
	for {
		resp, err := r.call(wctx, http.MethodGet, monitor, nil, "", http.StatusOK, http.StatusAccepted, http.StatusNoContent, http.StatusNotFound)
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				return fmt.Errorf("%w: task %s still running after %s", ErrStateTimeout, monitor, r.opts.StateTimeout)
			}
			return err
		}
		switch resp.status {
		case http.StatusNoContent, http.StatusNotFound:
			return nil
		case http.StatusOK:
			var t redfishTask
			if err := decodeResource(resp.body, "task "+monitor, &t); err != nil {
				return err
			}
			switch t.TaskState {
			case "Exception", "Killed", "Cancelled":
				var msgs []string
				for _, m := range t.Messages {
					if m.Message != "" {
						msgs = append(msgs, m.Message)
					}
				}
				return fmt.Errorf("the BMC's task ended %s (%s): %s", t.TaskState, t.TaskStatus, strings.Join(msgs, "; "))
			case "", "Completed":
				return nil
			}
			// Any other state (Running, Pending, ...) in a 200: still going.
		}
		if err := sleepCtx(wctx, r.opts.PollInterval); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: task %s still running after %s", ErrStateTimeout, monitor, r.opts.StateTimeout)
		}
	}
}

// waitFor polls PowerState until it is want, for at most StateTimeout. A BMC busy
// with the power change may drop a connection or time out: such errors are
// tolerated until the deadline; any other error ends the wait.
func (r *redfish) waitFor(ctx context.Context, want State, after string) error {
	return waitForState(ctx, r.opts.PollInterval, r.opts.StateTimeout, want, strconv.Quote(redfishStateName[want]), "PowerState", after,
		func(ctx context.Context) (State, string, error) {
			sys, _, err := r.getSystem(ctx)
			if err != nil {
				return StateUnknown, "", err
			}
			return redfishState(sys.PowerState), strconv.Quote(sys.PowerState), nil
		})
}

func (r *redfish) PowerOn(ctx context.Context) error { return r.wrap("power on", r.powerOn(ctx)) }

func (r *redfish) powerOn(ctx context.Context) error {
	sys, _, err := r.getSystem(ctx)
	if err != nil {
		return err
	}
	switch redfishState(sys.PowerState) {
	case StateOn:
		return nil
	case StatePoweringOn:
		return r.waitFor(ctx, StateOn, "PoweringOn")
	case StatePoweringOff:
		if err := r.waitFor(ctx, StateOff, "PoweringOff"); err != nil {
			return err
		}
	}
	rt, err := r.reset(ctx, sys, "On", "ForceOn", "PushPowerButton")
	if err != nil {
		return err
	}
	return r.waitFor(ctx, StateOn, "ResetType "+rt)
}

func (r *redfish) PowerOff(ctx context.Context) error {
	return r.wrap("power off", r.powerOff(ctx, "ForceOff"))
}

func (r *redfish) SoftOff(ctx context.Context) error {
	return r.wrap("soft off", r.powerOff(ctx, "GracefulShutdown"))
}

func (r *redfish) powerOff(ctx context.Context, resetType string) error {
	sys, _, err := r.getSystem(ctx)
	if err != nil {
		return err
	}
	switch redfishState(sys.PowerState) {
	case StateOff:
		return nil
	case StatePoweringOff:
		return r.waitFor(ctx, StateOff, "PoweringOff")
	}
	rt, err := r.reset(ctx, sys, resetType)
	if err != nil {
		return err
	}
	return r.waitFor(ctx, StateOff, "ResetType "+rt)
}

// PowerCycle uses ResetType PowerCycle where the BMC lists it, and otherwise
// ForceOff, a wait for Off, On and a wait for On. A machine that is off is
// powered on.
func (r *redfish) PowerCycle(ctx context.Context) error {
	return r.wrap("power cycle", r.powerCycle(ctx))
}

func (r *redfish) powerCycle(ctx context.Context) error {
	sys, _, err := r.getSystem(ctx)
	if err != nil {
		return err
	}
	switch redfishState(sys.PowerState) {
	case StateOff, StatePoweringOff, StatePoweringOn:
		return r.powerOn(ctx)
	}
	allowed, err := r.allowedResets(ctx, sys)
	if err != nil {
		return err
	}
	if slices.Contains(allowed, "PowerCycle") {
		if _, err := r.reset(ctx, sys, "PowerCycle"); err != nil {
			return err
		}
		return r.waitFor(ctx, StateOn, "ResetType PowerCycle")
	}
	r.log.Debug("redfish: no PowerCycle ResetType, cycling with ForceOff and On")
	if err := r.powerOff(ctx, "ForceOff"); err != nil {
		return err
	}
	return r.powerOn(ctx)
}

// ---- boot override -----------------------------------------------------------------

var redfishBootTargets = map[Device]string{DevicePXE: "Pxe", DeviceDisk: "Hdd", DeviceCDROM: "Cd"}

// SetNextBoot PATCHes Boot.BootSourceOverrideTarget with Enabled=Once, after
// checking the BMC's AllowableValues, with If-Match where the BMC gives an ETag
// (iLO answers 412 to a stale one and may require it).
func (r *redfish) SetNextBoot(ctx context.Context, d Device) error {
	return r.wrap("set next boot "+string(d), r.setNextBoot(ctx, d))
}

func (r *redfish) setNextBoot(ctx context.Context, d Device) error {
	target, ok := redfishBootTargets[d]
	if !ok {
		return fmt.Errorf("%w: boot device %q", ErrConfig, d)
	}
	sys, etag, err := r.getSystem(ctx)
	if err != nil {
		return err
	}
	if a := sys.Boot.TargetAllowed; len(a) > 0 && !slices.Contains(a, target) {
		return fmt.Errorf("%w: boot override target %s is not offered (BootSourceOverrideTarget@Redfish.AllowableValues: %s)",
			ErrUnsupported, target, strings.Join(a, ", "))
	}
	if a := sys.Boot.EnabledAllowed; len(a) > 0 && !slices.Contains(a, "Once") {
		return fmt.Errorf("%w: a one-time boot override is not offered (BootSourceOverrideEnabled@Redfish.AllowableValues: %s)",
			ErrUnsupported, strings.Join(a, ", "))
	}
	boot := map[string]string{
		"BootSourceOverrideTarget":  target,
		"BootSourceOverrideEnabled": "Once",
	}
	if m := r.bootMode; m != "" {
		switch {
		case len(sys.Boot.ModeAllowed) > 0 && !slices.Contains(sys.Boot.ModeAllowed, m):
			return fmt.Errorf("%w: boot mode %s is not offered (BootSourceOverrideMode@Redfish.AllowableValues: %s)",
				ErrUnsupported, m, strings.Join(sys.Boot.ModeAllowed, ", "))
		case sys.Boot.Mode == "" && len(sys.Boot.ModeAllowed) == 0:
			// The BMC has no BootSourceOverrideMode (older Redfish): the firmware
			// boots in the mode it is set to.
			r.log.Warn("redfish: the BMC cannot set the boot mode; the firmware's own setting applies", "want", m)
		case sys.Boot.Mode != m:
			boot["BootSourceOverrideMode"] = m
		}
	}
	body := map[string]any{"Boot": boot}
	err = r.patch(ctx, r.systemPath, body, etag, func(ctx context.Context) (string, error) {
		_, etag, err := r.getSystem(ctx)
		return etag, err
	})
	if err != nil {
		return err
	}
	if after, _, err := r.getSystem(ctx); err == nil && (after.Boot.Target != target || after.Boot.Enabled != "Once" ||
		boot["BootSourceOverrideMode"] != "" && after.Boot.Mode != boot["BootSourceOverrideMode"]) {
		// Some BMCs apply the override only at the next reset; the PATCH was
		// accepted, so this is worth a log line, not a failure.
		r.log.Debug("redfish: boot override not reflected yet", "target", after.Boot.Target, "enabled", after.Boot.Enabled, "mode", after.Boot.Mode)
	}
	return nil
}

// patch sends a PATCH with If-Match. A 412 (stale ETag) re-reads the ETag and
// tries once more; a 428 (If-Match required) without a known ETag retries with
// If-Match: * (RFC 9110 section 13.1.1).
func (r *redfish) patch(ctx context.Context, ref string, body any, etag string, refresh func(context.Context) (string, error)) error {
	_, err := r.call(ctx, http.MethodPatch, ref, body, etag, http.StatusOK, http.StatusAccepted, http.StatusNoContent)
	var se *statusError
	if !errors.As(err, &se) {
		return err
	}
	switch {
	case se.status == http.StatusPreconditionFailed:
		if etag, err = refresh(ctx); err != nil {
			return err
		}
	case se.status == http.StatusPreconditionRequired && etag == "":
		etag = "*"
	default:
		return err
	}
	_, err = r.call(ctx, http.MethodPatch, ref, body, etag, http.StatusOK, http.StatusAccepted, http.StatusNoContent)
	return err
}

// ---- virtual media -----------------------------------------------------------------

// InsertMedia attaches imageURL (http or https; the BMC fetches it) to the first
// CD/DVD virtual media slot, ejecting whatever is in it. The slot is found under
// the ComputerSystem (newer Redfish) or under its Manager (iLO, AMI).
func (r *redfish) InsertMedia(ctx context.Context, imageURL string) error {
	u, err := url.Parse(imageURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r.wrap("insert media", fmt.Errorf("%w: image URL must be http(s)://host/path", ErrConfig))
	}
	return r.wrap("insert media "+u.Redacted(), r.insertMedia(ctx, imageURL))
}

func (r *redfish) insertMedia(ctx context.Context, imageURL string) error {
	vm, etag, err := r.cdSlot(ctx)
	if err != nil {
		return err
	}
	if vm.Inserted && vm.Image == imageURL {
		return nil
	}
	if vm.Inserted {
		if err := r.ejectSlot(ctx, vm, etag); err != nil {
			return err
		}
		if etag, err = r.getJSON(ctx, vm.ODataID, "VirtualMedia", vm); err != nil {
			return err
		}
	}
	if t := vm.Actions.Insert.Target; t != "" {
		_, err := r.call(ctx, http.MethodPost, t, map[string]any{"Image": imageURL}, "",
			http.StatusOK, http.StatusAccepted, http.StatusNoContent)
		return err
	}
	// VirtualMedia without actions (the DMTF mockup) is changed by PATCH.
	return r.patch(ctx, vm.ODataID, map[string]any{"Image": imageURL, "Inserted": true}, etag, r.etagOf(vm.ODataID))
}

// EjectMedia detaches the image from the first CD/DVD slot; nothing to do when
// it is empty.
func (r *redfish) EjectMedia(ctx context.Context) error {
	vm, etag, err := r.cdSlot(ctx)
	if err == nil && vm.Inserted {
		err = r.ejectSlot(ctx, vm, etag)
	}
	return r.wrap("eject media", err)
}

func (r *redfish) ejectSlot(ctx context.Context, vm *virtualMedia, etag string) error {
	if t := vm.Actions.Eject.Target; t != "" {
		_, err := r.call(ctx, http.MethodPost, t, map[string]any{}, "",
			http.StatusOK, http.StatusAccepted, http.StatusNoContent)
		return err
	}
	return r.patch(ctx, vm.ODataID, map[string]any{"Image": nil, "Inserted": false}, etag, r.etagOf(vm.ODataID))
}

func (r *redfish) etagOf(ref string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var v virtualMedia
		return r.getJSON(ctx, ref, "VirtualMedia", &v)
	}
}

func (r *redfish) cdSlot(ctx context.Context) (*virtualMedia, string, error) {
	sys, _, err := r.getSystem(ctx)
	if err != nil {
		return nil, "", err
	}
	coll := sys.VirtualMedia.ID
	for _, m := range sys.Links.ManagedBy {
		if coll != "" {
			break
		}
		var mgr manager
		if _, err := r.getJSON(ctx, m.ID, "Manager", &mgr); err != nil {
			return nil, "", err
		}
		coll = mgr.VirtualMedia.ID
	}
	if coll == "" {
		return nil, "", fmt.Errorf("%w: neither the ComputerSystem nor its Manager offers VirtualMedia", ErrUnsupported)
	}
	var members collection
	if _, err := r.getJSON(ctx, coll, "VirtualMedia collection", &members); err != nil {
		return nil, "", err
	}
	for _, m := range members.Members {
		var vm virtualMedia
		etag, err := r.getJSON(ctx, m.ID, "VirtualMedia", &vm)
		if err != nil {
			return nil, "", err
		}
		if vm.ODataID == "" {
			vm.ODataID = m.ID
		}
		if isCDSlot(&vm) {
			return &vm, etag, nil
		}
	}
	return nil, "", fmt.Errorf("%w: no CD/DVD slot in %s", ErrUnsupported, coll)
}

// isCDSlot: MediaTypes lists CD or DVD; AMI's slot has no MediaTypes but is named CD1.
func isCDSlot(vm *virtualMedia) bool {
	if len(vm.MediaTypes) > 0 {
		return slices.Contains(vm.MediaTypes, "CD") || slices.Contains(vm.MediaTypes, "DVD")
	}
	return strings.Contains(strings.ToUpper(vm.ID+" "+vm.Name), "CD")
}
