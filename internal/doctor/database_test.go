package doctor

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckSchemaVersion(t *testing.T) {
	for _, tc := range []struct {
		db, bin int64
		want    Status
		says    string
	}{
		{3, 3, OK, "at schema version 3, this Kiln's"},
		{0, 3, Warn, "no Kiln schema yet"},
		{2, 3, Warn, "older than this Kiln's 3: kiln serve migrates it"},
		{4, 3, Fail, "schema version 4, newer than this Kiln's 3"},
	} {
		f := CheckSchemaVersion("SQLite kiln.db", tc.db, tc.bin)
		if f.Status != tc.want || !strings.Contains(f.Detail, tc.says) {
			t.Errorf("database %d, binary %d: %v %q; want %v saying %q", tc.db, tc.bin, f.Status, f.Detail, tc.want, tc.says)
		}
	}
}

func TestCheckIntegrity(t *testing.T) {
	if f := CheckIntegrity("SQLite kiln.db", nil); f.Status != OK {
		t.Errorf("passed check: %v", f)
	}
	f := CheckIntegrity("SQLite kiln.db", errors.New("quick_check found: row 3 missing from index"))
	if f.Status != Fail || !strings.Contains(f.Detail, "row 3 missing") {
		t.Errorf("failed check: %v", f)
	}
}

func TestCheckClockSkew(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		skew, between time.Duration
		want          Status
	}{
		{"in step", 0, 2 * time.Millisecond, OK},
		{"a second behind", -time.Second, 2 * time.Millisecond, OK},
		{"five seconds ahead", 5 * time.Second, 2 * time.Millisecond, Warn},
		{"a minute behind", -time.Minute, 2 * time.Millisecond, Fail},
		// A slow round trip: 5 s apparent skew within ±5 s of uncertainty.
		{"within the round trip", 5 * time.Second, 10 * time.Second, OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, after := t0, t0.Add(tc.between)
			server := t0.Add(tc.between / 2).Add(tc.skew)
			f := CheckClockSkew(server, before, after)
			if f.Status != tc.want {
				t.Errorf("skew %v: %v (%s), want %v", tc.skew, f.Status, f.Detail, tc.want)
			}
		})
	}
	if f := ClockSkewNotApplicable(); f.Status != OK || !strings.Contains(f.Detail, "n/a") {
		t.Errorf("SQLite: %v", f)
	}
}

func TestCheckFreeSpace(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name       string
		warn, fail uint64
		want       Status
	}{
		{"plenty", 0, 0, OK},
		{"below the warning", 1 << 62, 0, Warn},
		{"below the failure", 1 << 62, 1 << 62, Fail},
	} {
		if f := CheckFreeSpace(dir, tc.warn, tc.fail); f.Status != tc.want || !strings.Contains(f.Detail, "free of") {
			t.Errorf("%s: %v (%s), want %v", tc.name, f.Status, f.Detail, tc.want)
		}
	}
	if f := CheckFreeSpace(filepath.Join(dir, "absent"), 0, 0); f.Status != Warn {
		t.Errorf("absent dir: %v", f)
	}
	if got := bytesIEC(3 << 30); got != "3.0 GiB" {
		t.Errorf("bytesIEC(3 GiB) = %q", got)
	}
}

// TestEveryProblemHasAFix drives every check into each of its warnings and
// failures and requires a fix line for each.
func TestEveryProblemHasAFix(t *testing.T) {
	dir := t.TempDir()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	ipxe := filepath.Join(dir, "ipxe")
	os.MkdirAll(ipxe, 0o755)
	os.WriteFile(filepath.Join(ipxe, "ipxe.efi"), []byte("iPXE 1.21.1 no scheme"), 0o644)
	kek := filepath.Join(dir, "kek.key")
	os.WriteFile(kek, []byte(strings.Repeat("ab", 32)), 0o644)
	os.Chmod(kek, 0o644)
	garbage := filepath.Join(dir, "garbage.crt")
	os.WriteFile(garbage, []byte("not PEM"), 0o644)
	expired, soon := filepath.Join(dir, "expired.crt"), filepath.Join(dir, "soon.crt")
	writeCert(t, expired, time.Now().Add(-time.Hour))
	writeCert(t, soon, time.Now().Add(time.Hour))
	t0 := time.Now()

	findings := []Finding{
		CheckTCPPort("listen", tcp.Addr().String()),
		CheckUDPPort("tftp", udp.LocalAddr().String()),
		CheckInterface("kiln-absent0"),
		CheckKEKFile(kek),
		CheckKEKFile(filepath.Join(dir, "absent.key")),
		CheckKEKFile(dir),
		CheckCertificate("CA", filepath.Join(dir, "absent.crt"), time.Now(), time.Hour),
		CheckCertificate("CA", garbage, time.Now(), time.Hour),
		CheckCertificate("CA", expired, time.Now(), time.Hour),
		CheckCertificate("CA", soon, time.Now(), 24*time.Hour),
		CheckSchemaVersion("db", 0, 3),
		CheckSchemaVersion("db", 2, 3),
		CheckSchemaVersion("db", 4, 3),
		CheckIntegrity("db", errors.New("broken")),
		CheckClockSkew(t0.Add(5*time.Second), t0, t0),
		CheckClockSkew(t0.Add(time.Hour), t0, t0),
		CheckFreeSpace(dir, 1<<62, 0),
		CheckFreeSpace(dir, 1<<62, 1<<62),
		CheckFreeSpace(filepath.Join(dir, "absent"), 0, 0),
	}
	findings = append(findings, CheckSubnetInterfaces(map[string][]string{"lab": {"kiln-absent0"}})...)
	findings = append(findings, CheckIPXE(filepath.Join(dir, "absent"))...)
	findings = append(findings, CheckIPXE(ipxe)...)
	problems := 0
	for _, f := range findings {
		if f.Status == OK {
			continue
		}
		problems++
		if strings.TrimSpace(f.Fix) == "" {
			t.Errorf("%s %s: %s: no fix", f.Status, f.Check, f.Detail)
		}
	}
	if problems < len(findings)-2 {
		t.Errorf("only %d of %d findings were problems: the test no longer reaches them", problems, len(findings))
	}
}

// TestFindingLiteralsHaveFixes reads the doctor's sources and kiln doctor's
// command: every Finding literal with a status other than OK names a Fix (the
// findings made by assignment are driven by TestEveryProblemHasAFix).
func TestFindingLiteralsHaveFixes(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	files = append(files, filepath.Join("..", "cli", "doctor_cmd.go"))
	fset := token.NewFileSet()
	checked := 0
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok || !isFindingType(lit.Type) {
				return true
			}
			var status string
			hasFix := false
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				switch kv.Key.(*ast.Ident).Name {
				case "Status":
					status = exprName(kv.Value)
				case "Fix":
					hasFix = true
				}
			}
			if status != "" && status != "OK" {
				checked++
				if !hasFix {
					t.Errorf("%s: a Finding with Status %s and no Fix", fset.Position(lit.Pos()), status)
				}
			}
			return true
		})
	}
	if checked == 0 {
		t.Error("no Finding literal with a status found: the test no longer reads the sources")
	}
}

func isFindingType(e ast.Expr) bool {
	switch v := e.(type) {
	case *ast.Ident:
		return v.Name == "Finding"
	case *ast.SelectorExpr:
		return v.Sel.Name == "Finding"
	}
	return false
}

func exprName(e ast.Expr) string {
	switch v := e.(type) {
	case *ast.Ident:
		return v.Name
	case *ast.SelectorExpr:
		return v.Sel.Name
	}
	return "?"
}
