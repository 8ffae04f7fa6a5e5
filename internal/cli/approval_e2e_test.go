package cli_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testkit"
)

// TestEnrollmentApprovalThroughBinary: `kiln agent enroll` without a token against
// `kiln serve --enroll-approval-without-token` waits; `kiln get enrollments` lists
// the request, `kiln enrollment approve` lets the agent collect its certificate, and a
// denied request ends the other agent with the reason.
func TestEnrollmentApprovalThroughBinary(t *testing.T) {
	s, httpsAddr := approvalServer(t)
	fp := strings.TrimSpace(s.MustKiln("", "ca", "show", "--fingerprint"))
	idRe := regexp.MustCompile(`enr-[0-9a-f]{12}`)

	startAgent := func(dir string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(testkit.KilnBinary(t), "agent", "enroll", "--server", "https://"+httpsAddr, "--ca-fingerprint", fp,
			"--dir", dir, "--poll-interval", "100ms")
		cmd.Env = testkit.CleanEnv()
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		return cmd, out
	}
	waitID := func(out *syncBuffer) string {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if id := idRe.FindString(out.String()); id != "" {
				return id
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the agent never said it waits; output:\n%s\nserver log:\n%s", out, s.Log)
		return ""
	}
	wait := func(cmd *exec.Cmd) error {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatal("the agent did not finish within 30s of the decision")
			return nil
		}
	}

	agentDir := filepath.Join(t.TempDir(), "agent")
	cmd, out := startAgent(agentDir)
	id := waitID(out)
	table := s.MustKiln("", "get", "enrollments")
	for _, want := range []string{"STATE", "SOURCE", "MACS", "HOSTNAME", "MACHINE", "AGE", id, "pending", "127.0.0.1"} {
		if !strings.Contains(table, want) {
			t.Fatalf("kiln get enrollments lacks %q:\n%s", want, table)
		}
	}
	if d := s.MustKiln("", "describe", "enrollment", id); !strings.Contains(d, "keyFingerprint") || !strings.Contains(d, "facts") {
		t.Fatalf("kiln describe enrollment:\n%s", d)
	}
	// Still waiting: nothing was issued yet.
	time.Sleep(300 * time.Millisecond)
	if cmd.ProcessState != nil {
		t.Fatalf("the agent ended before approval:\n%s", out)
	}
	approved := s.MustKiln("", "enrollment", "approve", id, "--machine", "approved-1")
	if !strings.Contains(approved, "approved as machine approved-1") {
		t.Fatalf("kiln enrollment approve: %s", approved)
	}
	if err := wait(cmd); err != nil {
		t.Fatalf("agent after approval: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "enrolled as machine approved-1") {
		t.Fatalf("agent output:\n%s", out)
	}
	if m := s.MustKiln("", "get", "machines", "approved-1", "-o", "json"); !strings.Contains(m, `"certFingerprint"`) {
		t.Fatalf("approved machine:\n%s", m)
	}
	if a := s.MustKiln("", "audit", "list", "-o", "json"); !strings.Contains(a, "enrollment-approve") {
		t.Fatal("no enrollment-approve audit entry")
	}

	// A denied request: the agent stops, with the operator's reason.
	cmd2, out2 := startAgent(filepath.Join(t.TempDir(), "agent2"))
	id2 := waitID(out2)
	s.MustKiln("", "enrollment", "deny", id2, "--reason", "not ours")
	err := wait(cmd2)
	if err == nil || !strings.Contains(out2.String(), "not ours") {
		t.Fatalf("agent after denial: %v\n%s", err, out2)
	}
	// An operator cannot approve it afterwards.
	if o, err := s.Kiln("", "enrollment", "approve", id2); err == nil {
		t.Fatalf("approval of a denied request: %s", o)
	}
	var buf bytes.Buffer
	buf.WriteString(s.MustKiln("", "get", "enrollments"))
	if !strings.Contains(buf.String(), "denied") || !strings.Contains(buf.String(), "approved") {
		t.Fatalf("kiln get enrollments after decisions:\n%s", buf.String())
	}
}

// approvalServer starts kiln serve with HTTPS and approval without a token.
func approvalServer(t *testing.T) (*testkit.Server, string) {
	t.Helper()
	s, addr := httpsServerWith(t, "--enroll-approval-without-token")
	return s, addr
}

// syncBuffer is a buffer a child's output goroutine and the test share.
type syncBuffer = testkit.LogBuffer
