package workflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/testkit"
	"github.com/kilnhq/kiln/internal/workflow"
)

// agentHTTP is the agent API as a machine's certificate reaches it.
type agentHTTP struct {
	t   *testing.T
	url string
}

func (e *env) agentAPI() *agentHTTP {
	api := &workflow.AgentAPI{Engine: e.eng, Identity: func(r *http.Request) (string, bool) {
		m := r.Header.Get("X-Test-Machine")
		return m, m != ""
	}}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	e.t.Cleanup(srv.Close)
	return &agentHTTP{t: e.t, url: srv.URL}
}

func (a *agentHTTP) do(machine, method, path, body string) (int, string) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.url+path, bytes.NewBufferString(body))
	req.Header.Set("X-Test-Machine", machine)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *agentHTTP) fetch(machine string) {
	a.t.Helper()
	if code, body := a.do(machine, "GET", "/agent/v1/workflow", ""); code != http.StatusOK {
		a.t.Fatalf("GET /agent/v1/workflow as %s: %d %s", machine, code, body)
	}
}

func (a *agentHTTP) report(machine, wf, action, state string) (int, string) {
	a.t.Helper()
	return a.do(machine, "POST", "/agent/v1/workflows/"+wf+"/actions/"+action, `{"state":"`+state+`"}`)
}

func (e *env) audit(action string) []audit.Entry {
	e.t.Helper()
	return testkit.AuditEntries(e.t, e.inv.Store, action)
}

// TestStolenCertificateCannotReportProvisioned is issue 13's "jump to provisioned":
// a machine certificate reporting every action as succeeded without having fetched
// the workflow, out of order or ahead, is refused (409, audited), and the machine
// stays provisioning.
func TestStolenCertificateCannotReportProvisioned(t *testing.T) {
	e := newEnv(t)
	wf, err := e.eng.Start(context.Background(), "t", "web-1", "")
	if err != nil {
		t.Fatal(err)
	}
	name := wf.Metadata.Name
	api := e.agentAPI()
	for _, action := range []string{"stream", "hostname", "reboot"} {
		code, body := api.report("web-1", name, action, "succeeded")
		if code != http.StatusConflict || !strings.Contains(body, "fetch") {
			t.Fatalf("%s reported succeeded without a fetch of the workflow: %d %s, want 409 naming the fetch", action, code, body)
		}
	}
	if st := e.state("web-1"); st != resource.StateProvisioning {
		t.Fatalf("machine is %s after reports without a fetch, want provisioning", st)
	}
	if n := len(e.audit("report-refused")); n != 3 {
		t.Fatalf("%d report-refused audit entries, want 3", n)
	}
	api.fetch("web-1")
	for _, c := range []struct{ action, state string }{{"reboot", "succeeded"}, {"hostname", "running"}, {"hostname", "succeeded"}} {
		if code, body := api.report("web-1", name, c.action, c.state); code != http.StatusConflict {
			t.Fatalf("future action %s reported %s: %d %s, want 409", c.action, c.state, code, body)
		}
	}
	if st := e.state("web-1"); st != resource.StateProvisioning {
		t.Fatalf("machine is %s after out-of-order reports, want provisioning", st)
	}
}

// TestAgentRetriesAndResumeStillWork: the agent's legitimate behaviour goes on: a
// retried report of the current action (the answer was lost), and an agent that
// restarted and fetched again.
func TestAgentRetriesAndResumeStillWork(t *testing.T) {
	e := newEnv(t)
	wf, err := e.eng.Start(context.Background(), "t", "web-1", "")
	if err != nil {
		t.Fatal(err)
	}
	name := wf.Metadata.Name
	api := e.agentAPI()
	api.fetch("web-1")
	for _, s := range []struct{ action, state string }{
		{"stream", "running"}, {"stream", "running"}, {"stream", "succeeded"}, {"stream", "succeeded"}, // retried
	} {
		if code, body := api.report("web-1", name, s.action, s.state); code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", s.action, s.state, code, body)
		}
	}
	api.fetch("web-1") // the agent restarted
	for _, s := range []struct{ action, state string }{
		{"hostname", "succeeded"}, {"reboot", "running"}, {"reboot", "succeeded"}, {"reboot", "succeeded"}, // retried after the end
	} {
		if code, body := api.report("web-1", name, s.action, s.state); code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", s.action, s.state, code, body)
		}
	}
	if st := e.state("web-1"); st != resource.StateProvisioned {
		t.Fatalf("machine is %s, want provisioned", st)
	}
	var resp workflow.WorkflowResponse
	_, body := api.report("web-1", name, "reboot", "succeeded")
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Status == nil || resp.Status.State != workflow.Succeeded {
		t.Fatalf("retried last report: %s", body)
	}
}
