package power

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fixtureFiles returns every Redfish response under testdata/redfish.
func fixtureFiles(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join("testdata", "redfish"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = b
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("read fixtures: %v (%d files)", err, len(files))
	}
	return files
}

// parseAll runs every Redfish parser on data, as the driver would on a response.
func parseAll(data []byte) {
	if sys, err := parseSystem(data); err == nil {
		_ = redfishState(sys.PowerState)
		_ = slices.Contains(sys.Boot.TargetAllowed, "Pxe")
	}
	_, _ = resetTypesFromActionInfo(data)
	var root serviceRoot
	_ = decodeResource(data, "service root", &root)
	var c collection
	_ = decodeResource(data, "collection", &c)
	var vm virtualMedia
	if decodeResource(data, "VirtualMedia", &vm) == nil {
		_ = isCDSlot(&vm)
	}
	_ = redfishMessage(data)
}

func FuzzParseRedfish(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		f.Add(b)
	}
	for _, s := range []string{``, `null`, `[]`, `{"PowerState": 5}`, `{"Actions": {"#ComputerSystem.Reset": null}}`,
		`{"Boot": {"BootSourceOverrideTarget@Redfish.AllowableValues": [1, null]}}`, `{"error": {"@Message.ExtendedInfo": [{}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parseAll(data)
		if _, err := parseSystem(data); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("parse error %v is not ErrMalformed", err)
		}
	})
}

func FuzzIPMIOutput(f *testing.F) {
	for _, s := range []string{"Chassis Power is on\n", "Chassis Power is off\n",
		"Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n",
		"Get Auth Capabilities error\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		if s, err := parseIPMIStatus(out); err == nil && s != StateOn && s != StateOff {
			t.Fatalf("status %q from %q", s, out)
		}
		if err := ipmitoolError("ipmitool x", out, errors.New("exit status 1")); err == nil {
			t.Fatal("no error")
		}
	})
}

// TestParseFixtures reads every mockup with the driver's parsers: what each BMC
// lists is what the driver will act on.
func TestParseFixtures(t *testing.T) {
	for p, b := range fixtureFiles(t) {
		var doc map[string]any
		if err := decodeResource(b, p, &doc); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	want := map[string]struct {
		inlineResets []string
		actionInfo   string
		pxe          bool
	}{
		"dmtf-public-rackmount1/redfish/v1/Systems/437XR1138R2": {inlineResets: []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn", "PushPowerButton"}, pxe: true},
		"hpe-ilo5-dl325-gen10plus/redfish/v1/Systems/1":         {inlineResets: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton", "GracefulRestart"}, pxe: true},
		"gigabyte-ami-h262-z63/redfish/v1/Systems/Self":         {actionInfo: "/redfish/v1/Systems/Self/ResetActionInfo", pxe: true},
		"openbmc-stock/redfish/v1/Systems/system":               {actionInfo: "/redfish/v1/Systems/system/ResetActionInfo", pxe: true},
	}
	for p, w := range want {
		b, err := os.ReadFile(filepath.Join("testdata", "redfish", p, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		sys, err := parseSystem(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		a := sys.Actions.Reset
		if !slices.Equal(a.Allowed, w.inlineResets) || a.ActionInfo != w.actionInfo || a.Target == "" {
			t.Errorf("%s: reset %+v", p, a)
		}
		if slices.Contains(sys.Boot.TargetAllowed, "Pxe") != w.pxe {
			t.Errorf("%s: boot targets %v", p, sys.Boot.TargetAllowed)
		}
	}
	types, err := resetTypesFromActionInfo(fixtureFiles(t)[filepath.Join("testdata", "redfish", "openbmc-stock", "redfish", "v1", "Systems", "system", "ResetActionInfo", "index.json")])
	if err != nil || !slices.Contains(types, "PowerCycle") {
		t.Fatalf("OpenBMC ActionInfo: %v %v", types, err)
	}
	// iLO's capture holds an error body where a Session should be: it parses as an
	// error message, and as a resource without the fields the driver needs.
	b := fixtureFiles(t)[filepath.Join("testdata", "redfish", "hpe-ilo5-dl325-gen10plus", "redfish", "v1", "SessionService", "Sessions", "root000000006258535599fb3292", "index.json")]
	if msg := redfishMessage(b); msg != "Base.1.4.ResourceMissingAtURI" {
		t.Fatalf("iLO error body read as %q", msg)
	}
}
