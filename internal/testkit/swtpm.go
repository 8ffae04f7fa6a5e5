package testkit

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	byteorder "encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
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
	certs := state + ".certs"
	if err := os.Mkdir(certs, 0o700); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(certs) })
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert",
		"--create-platform-cert", "--config", ca.config, "--overwrite", "--write-ek-cert-files", certs).CombinedOutput()
	if err != nil {
		tb.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	return state
}

// EKPin is the sha256 (hex) of the PKIX DER public key of the RSA EK of the TPM
// manufactured into state: what spec.tpm.ekSHA256 pins.
func EKPin(tb testing.TB, state string) string {
	tb.Helper()
	der, err := os.ReadFile(filepath.Join(state+".certs", "ek-rsa2048.crt"))
	if err != nil {
		tb.Fatalf("read the EK certificate swtpm_setup wrote: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse the EK certificate: %v", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// StartSWTPMForQEMU runs swtpm on state with its control channel on a Unix socket,
// for QEMU's -tpmdev emulator (QEMU initializes and starts the TPM as firmware
// would); it returns the socket's path. swtpm ends when QEMU disconnects
// (--terminate), so a VM that reboots with the same TPM state gets a new swtpm; one
// still holding the state's lock is waited for. It is stopped when tb ends.
func StartSWTPMForQEMU(tb testing.TB, state string) string {
	tb.Helper()
	sock := filepath.Join(state, fmt.Sprintf("swtpm-%d.sock", time.Now().UnixNano()))
	var lastErr string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state, "--ctrl", "type=unixio,path="+sock, "--terminate")
		cmd.SysProcAttr = diesWithTest()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start swtpm: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		for wait := time.Now().Add(5 * time.Second); time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				tb.Cleanup(func() {
					cmd.Process.Kill()
					<-exited
				})
				return sock
			}
			select {
			case <-exited:
				// The previous swtpm of this state has not released its lock yet.
				lastErr = stderr.String()
				wait = time.Time{}
			default:
			}
		}
		cmd.Process.Kill()
		<-exited
	}
	tb.Fatalf("swtpm made no socket %s: %s", sock, lastErr)
	return ""
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
		cmd.SysProcAttr = diesWithTest()
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

// TPMEvent is one measurement a test's "firmware" makes: extended into swtpm and
// written to the event log, as OVMF and the Linux EFI stub do.
type TPMEvent struct {
	PCR  int
	Type uint32
	Data []byte
	// Measured is what the digest is of, when not Data (the Linux EFI stub logs a
	// description and extends the hash of its command line).
	Measured []byte
}

// TCG event types tests measure (TCG PC Client Platform Firmware Profile, table 9).
const (
	EvSeparator                  = 0x00000004
	EvEventTag                   = 0x00000006
	EvSCRTMVersion               = 0x00000008
	EvEFIBootServicesApplication = 0x80000003
)

// The Linux EFI stub's event tags for what it measures into PCR 9
// (drivers/firmware/efi/libstub/efi-stub-helper.c).
const (
	LinuxInitrdTagID      = 0x8F3B22EC
	LinuxLoadOptionsTagID = 0x8F3B22ED
)

// UEFIBoot is a plausible UEFI netboot: the CRTM version in PCR 0, separators in
// PCRs 0-7, iPXE and the kernel in PCR 4, then in PCR 9 what the Linux EFI stub
// measures: its command line (which carries a per-boot token, so it differs on
// every call) and the initrd, as tagged events.
func UEFIBoot(kernel, initrd string) []TPMEvent {
	ev := []TPMEvent{{PCR: 0, Type: EvSCRTMVersion, Data: []byte("OVMF\x00")}}
	for pcr := range 8 {
		ev = append(ev, TPMEvent{PCR: pcr, Type: EvSeparator, Data: []byte{0, 0, 0, 0}})
	}
	tagged := func(id uint32, desc string) []byte {
		b := byteorder.LittleEndian.AppendUint32(nil, id)
		b = byteorder.LittleEndian.AppendUint32(b, uint32(len(desc)+1))
		return append(append(b, desc...), 0)
	}
	token := make([]byte, 8)
	rand.Read(token)
	cmdline := "console=ttyS0 kiln.token=" + hex.EncodeToString(token)
	return append(ev,
		TPMEvent{PCR: 4, Type: EvEFIBootServicesApplication, Data: []byte("ipxe.efi")},
		TPMEvent{PCR: 4, Type: EvEFIBootServicesApplication, Data: []byte(kernel)},
		TPMEvent{PCR: 9, Type: EvEventTag, Data: tagged(LinuxLoadOptionsTagID, "LOADED_IMAGE::LoadOptions"), Measured: []byte(cmdline)},
		TPMEvent{PCR: 9, Type: EvEventTag, Data: tagged(LinuxInitrdTagID, "Linux initrd"), Measured: []byte(initrd)},
	)
}

// TCGEventLog writes a crypto-agile TCG event log (SHA-256 only) of events, each
// event's digest the sha256 of its data; it returns the log and the digests.
func TCGEventLog(events []TPMEvent) ([]byte, [][32]byte) {
	var b bytes.Buffer
	le := func(v any) { byteorder.Write(&b, byteorder.LittleEndian, v) }
	// First event: TCG_PCR_EVENT (SHA-1 format) holding TCG_EfiSpecIDEvent.
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	byteorder.Write(&spec, byteorder.LittleEndian, struct {
		PlatformClass              uint32
		Minor, Major, Errata, Uint uint8
		NumAlgs                    uint32
		Alg, Size                  uint16
		VendorInfoSize             uint8
	}{0, 0, 2, 0, 2, 1, 0x000B, 32, 0})
	le(uint32(0))
	le(uint32(0x3)) // EV_NO_ACTION
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	var digests [][32]byte
	for _, e := range events {
		measured := e.Measured
		if measured == nil {
			measured = e.Data
		}
		d := sha256.Sum256(measured)
		digests = append(digests, d)
		le(uint32(e.PCR))
		le(e.Type)
		le(uint32(1))
		le(uint16(0x000B))
		b.Write(d[:])
		le(uint32(len(e.Data)))
		b.Write(e.Data)
	}
	return b.Bytes(), digests
}

// Measure extends events into the TPM's SHA-256 PCRs (TPM2_PCR_Extend) and makes
// their log the connection's event log.
func (c *TPMConn) Measure(tb testing.TB, events []TPMEvent) {
	tb.Helper()
	log, digests := TCGEventLog(events)
	for i, e := range events {
		if err := tpm2.PCRExtend(c, tpmutil.Handle(e.PCR), tpm2.AlgSHA256, digests[i][:], ""); err != nil {
			tb.Fatalf("extend pcr %d: %v", e.PCR, err)
		}
	}
	c.EventLog = log
}

// MeasureMore extends the PCRs with more events, measured after earlier (what
// Measure was given), and makes the event log the whole sequence: a module the
// running system loaded later, say.
func (c *TPMConn) MeasureMore(tb testing.TB, earlier, more []TPMEvent) {
	tb.Helper()
	all := append(append([]TPMEvent(nil), earlier...), more...)
	log, digests := TCGEventLog(all)
	for i, e := range more {
		if err := tpm2.PCRExtend(c, tpmutil.Handle(e.PCR), tpm2.AlgSHA256, digests[len(earlier)+i][:], ""); err != nil {
			tb.Fatalf("extend pcr %d: %v", e.PCR, err)
		}
	}
	c.EventLog = log
}

// diesWithTest makes a child process end with the test binary even when that is
// killed (a go test timeout, a mutation run's): Cleanup does not run then, and a
// swtpm would be left listening.
func diesWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
