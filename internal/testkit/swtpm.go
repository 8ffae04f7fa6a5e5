package testkit

import (
	"bytes"
	byteorder "encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// SWTPMCA is a TPM vendor for tests: swtpm_localca's root and intermediate, which
// sign the EK certificates of the TPMs it manufactures.
type SWTPMCA struct {
	dir    string
	config string
}

// NewSWTPMCA makes an empty local CA in a temporary directory; its keys are made
// by the first Manufacture. Needs swtpm_setup (Debian swtpm-tools).
func NewSWTPMCA(tb testing.TB) *SWTPMCA {
	tb.Helper()
	NeedTool(tb, "swtpm_setup", "swtpm-tools")
	NeedTool(tb, "swtpm", "swtpm")
	dir := tb.TempDir()
	ca := &SWTPMCA{dir: filepath.Join(dir, "ca"), config: filepath.Join(dir, "swtpm_setup.conf")}
	if err := os.Mkdir(ca.dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	localca := filepath.Join(dir, "swtpm-localca.conf")
	writeFile(tb, localca, fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca.dir))
	writeFile(tb, filepath.Join(dir, "swtpm-localca.options"), "--platform-manufacturer Kiln\n--platform-version 2.1\n--platform-model test\n")
	writeFile(tb, ca.config, fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
		localca, filepath.Join(dir, "swtpm-localca.options")))
	return ca
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Manufacture makes a new TPM's state (an RSA EK persisted at 0x81010001 and its
// certificate in NV 0x01c00002, signed by ca) and returns its directory.
func (ca *SWTPMCA) Manufacture(tb testing.TB) string {
	tb.Helper()
	state := tb.TempDir()
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert",
		"--create-platform-cert", "--config", ca.config, "--overwrite").CombinedOutput()
	if err != nil {
		tb.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	return state
}

// RootsDir is a folder with the CA's root and intermediate certificates, as an
// operator would give Kiln a TPM vendor's (valid after the first Manufacture).
func (ca *SWTPMCA) RootsDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		data, err := os.ReadFile(filepath.Join(ca.dir, f))
		if err != nil {
			tb.Fatalf("read swtpm CA certificate (Manufacture first): %v", err)
		}
		writeFile(tb, filepath.Join(dir, f), string(data))
	}
	return dir
}

// SWTPM is a running swtpm with its TPM command channel on a loopback TCP port.
type SWTPM struct {
	Addr string
}

// StartSWTPM runs swtpm on state (from Manufacture) on 127.0.0.1, started and
// cleared as firmware would leave it; it is stopped when tb ends.
func StartSWTPM(tb testing.TB, state string) *SWTPM {
	tb.Helper()
	for range 5 {
		port, ok := freePortPair(tb)
		if !ok {
			continue
		}
		cmd := exec.Command("swtpm", "socket", "--tpm2",
			"--server", "type=tcp,port="+strconv.Itoa(port)+",bindaddr=127.0.0.1",
			"--ctrl", "type=tcp,port="+strconv.Itoa(port+1)+",bindaddr=127.0.0.1",
			"--tpmstate", "dir="+state, "--flags", "not-need-init,startup-clear")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start swtpm: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case err := <-exited:
				// Most likely the port was taken meanwhile: try another.
				tb.Logf("swtpm exited (%v): %s", err, stderr.String())
				goto retry
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				tb.Cleanup(func() {
					cmd.Process.Kill()
					<-exited
				})
				return &SWTPM{Addr: addr}
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		<-exited
		tb.Fatalf("swtpm on %s did not accept connections: %s", addr, stderr.String())
	retry:
	}
	tb.Fatalf("start swtpm: no free pair of loopback ports after 5 tries")
	return nil
}

// freePortPair finds a port p such that p and p+1 were free a moment ago (swtpm's
// command and control channels).
func freePortPair(tb testing.TB) (int, bool) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
	if err != nil {
		return 0, false
	}
	ln2.Close()
	return port, true
}

// TPMConn is a connection to swtpm's command channel that reads one whole TPM
// response per Read (TCP may split it; go-tpm reads a response with one Read), and
// serves the event log the test built as the platform's measurement log.
type TPMConn struct {
	conn     net.Conn
	pending  bytes.Buffer
	EventLog []byte
}

// Dial connects to s; the connection is closed when tb ends.
func (s *SWTPM) Dial(tb testing.TB) *TPMConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("connect to swtpm: %v", err)
	}
	tc := &TPMConn{conn: c}
	tb.Cleanup(func() { c.Close() })
	return tc
}

func (c *TPMConn) Write(p []byte) (int, error) { return c.conn.Write(p) }

func (c *TPMConn) Read(p []byte) (int, error) {
	if c.pending.Len() == 0 {
		// TPM response header: tag (2), size (4, big endian, whole response), code (4).
		header := make([]byte, 10)
		if _, err := io.ReadFull(c.conn, header); err != nil {
			return 0, err
		}
		size := byteorder.BigEndian.Uint32(header[2:6])
		if size < 10 || size > 1<<16 {
			return 0, fmt.Errorf("swtpm response size %d", size)
		}
		body := make([]byte, size-10)
		if _, err := io.ReadFull(c.conn, body); err != nil {
			return 0, err
		}
		c.pending.Write(header)
		c.pending.Write(body)
	}
	return c.pending.Read(p)
}

// Close is a no-op: the connection lives until the test ends, so a TPM handle
// closed by the code under test does not end the test's access.
func (c *TPMConn) Close() error { return nil }

// MeasurementLog returns EventLog (go-attestation's CommandChannelTPM20).
func (c *TPMConn) MeasurementLog() ([]byte, error) { return c.EventLog, nil }
