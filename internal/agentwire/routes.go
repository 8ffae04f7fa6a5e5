package agentwire

import "net/url"

// Routes of the enrollment and agent API. The agent API (AgentPrefix) needs a machine
// certificate; /enroll and the CA are reachable before the machine has one.
const (
	// EnrollPath takes an EnrollRequest and answers an EnrollResponse.
	EnrollPath = "/enroll"
	// CACertPath serves the CA certificate (PEM).
	CACertPath = "/ca.crt"
	// CRLPath serves the certificate revocation list.
	CRLPath = "/crl"
	// AgentPrefix is the prefix of every route that needs a machine certificate.
	AgentPrefix = "/agent/v1/"
	// RenewPath takes a RenewRequest and answers an EnrollResponse.
	RenewPath = "/agent/v1/renew"
	// SelfPath answers what Kiln knows of the calling machine.
	SelfPath = "/agent/v1/self"
	// WorkflowPath answers the machine's current WorkflowResponse (204: none).
	WorkflowPath = "/agent/v1/workflow"
	// FactsPath takes the machine's facts (a JSON object).
	FactsPath = "/agent/v1/facts"
	// ActionReportPattern takes a Report on one action, as a net/http pattern.
	ActionReportPattern = "/agent/v1/workflows/{workflow}/actions/{action}"
)

// ActionReportPath is ActionReportPattern for one workflow's action.
func ActionReportPath(workflow, action string) string {
	return "/agent/v1/workflows/" + url.PathEscape(workflow) + "/actions/" + url.PathEscape(action)
}
