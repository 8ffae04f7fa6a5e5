package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/httpjson"
	"github.com/kilnhq/kiln/internal/power"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
)

// onDriver is a BMC whose machine is on and does what it is asked.
type onDriver struct{}

func (onDriver) PowerOn(context.Context) error                   { return nil }
func (onDriver) PowerOff(context.Context) error                  { return nil }
func (onDriver) PowerCycle(context.Context) error                { return nil }
func (onDriver) SoftOff(context.Context) error                   { return nil }
func (onDriver) Status(context.Context) (power.State, error)     { return power.StateOn, nil }
func (onDriver) SetNextBoot(context.Context, power.Device) error { return nil }
func (onDriver) Close(context.Context) error                     { return nil }

// TestPowerHandle: the power endpoint answers through httpjson like every other
// endpoint: errors are an ErrorResponse (message and code) with the status the
// CLI expects, and a fleet request runs on the machines the selector picks that
// have a BMC.
func TestPowerHandle(t *testing.T) {
	ts := testkit.NewStore(t, `
kind: Machine
metadata: {name: web-1, labels: {rack: a}}
spec: {bmc: {driver: redfish, address: "https://10.0.9.1"}}
---
kind: Machine
metadata: {name: no-bmc, labels: {rack: a}}
spec: {}
`)
	p := &powerService{st: ts.Store, inv: ts.Inv, owner: "test"}
	p.runner = power.NewRunner(power.RunnerConfig{
		NewDriver: func(context.Context, string, resource.BMC) (power.Driver, error) { return onDriver{}, nil },
		Jobs:      p, Timeout: time.Minute, Owner: p.owner,
	})

	tests := []struct {
		name, machine, body string
		code                int
		errHas              string // "": a PowerResponse
	}{
		{"malformed JSON", "web-1", `{"op":`, http.StatusBadRequest, "malformed JSON"},
		{"unknown field", "web-1", `{"op":"on","force":true}`, http.StatusBadRequest, "malformed JSON"},
		{"unknown op", "web-1", `{"op":"explode"}`, http.StatusUnprocessableEntity, `"explode" is not one of`},
		{"unknown machine", "ghost", `{"op":"on"}`, http.StatusNotFound, "ghost"},
		{"machine without a BMC", "no-bmc", `{"op":"on"}`, http.StatusUnprocessableEntity, `machine "no-bmc" has no spec.bmc`},
		{"fleet without a selector", "", `{"op":"on"}`, http.StatusUnprocessableEntity, "selector: required"},
		{"bad selector", "", `{"op":"on","selector":"rack in ("}`, http.StatusUnprocessableEntity, ""},
		{"fleet status", "", `{"op":"status","selector":"rack=a"}`, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/v1/power", strings.NewReader(tc.body))
			if tc.machine != "" {
				r.SetPathValue("name", tc.machine)
			}
			w := httptest.NewRecorder()
			p.handle(w, r)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			for k, v := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.code >= 400 {
				var e httpjson.ErrorResponse
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != tc.code || !strings.Contains(e.Error, tc.errHas) || e.Error == "" {
					t.Fatalf("error body %s (%v), want code %d and an error with %q", w.Body, err, tc.code, tc.errHas)
				}
				return
			}
			var resp PowerResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.Jobs) != 1 || resp.Jobs[0].Machine != "web-1" || resp.Jobs[0].State != power.JobSucceeded {
				t.Fatalf("jobs %s, want one succeeded job on web-1 (no-bmc is skipped)", w.Body)
			}
		})
	}
}
