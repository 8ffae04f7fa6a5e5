package enroll

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/agentwire"
)

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTokenRoundTripAndStrictParsing(t *testing.T) {
	key := testKey(t)
	pub := key.Public().(ed25519.PublicKey)
	c := &Claims{ID: "jt-1", Issuer: "https://kiln:8443", IssuedAt: 1, NotBefore: 1, Expires: 2,
		Scope: Scope{Profile: "worker", MACs: []string{"52:54:00:00:00:01"}, Policy: []string{"true"}}}
	tok, err := signToken(key, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseToken(pub, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "jt-1" || got.Scope.Profile != "worker" || got.Scope.MACs[0] != "52:54:00:00:00:01" {
		t.Fatalf("claims %+v", got)
	}
	parts := strings.Split(tok, ".")
	hdr := func(s string) string { return b64.EncodeToString([]byte(s)) }
	sign := func(h, p string) string {
		in := h + "." + p
		return in + "." + b64.EncodeToString(ed25519.Sign(key, []byte(in)))
	}
	payload := func(s string) string { return b64.EncodeToString([]byte(s)) }
	bad := map[string]string{
		"empty":                 "",
		"two segments":          parts[0] + "." + parts[1],
		"four segments":         tok + ".x",
		"alg none":              hdr(`{"alg":"none"}`) + "." + parts[1] + ".",
		"alg HS256":             hdr(`{"alg":"HS256","typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
		"alg lower case":        sign(hdr(`{"alg":"eddsa","typ":"JWT"}`), parts[1]),
		"extra header field":    sign(hdr(`{"alg":"EdDSA","typ":"JWT","jku":"http://evil"}`), parts[1]),
		"typ JWE":               sign(hdr(`{"alg":"EdDSA","typ":"JWE"}`), parts[1]),
		"padding":               parts[0] + "=." + parts[1] + "." + parts[2],
		"std base64":            parts[0] + "." + parts[1] + "." + "+" + parts[2][1:],
		"short signature":       parts[0] + "." + parts[1] + "." + parts[2][:20],
		"unknown claim":         sign(parts[0], payload(`{"jti":"x","exp":5,"scope":{},"admin":true}`)),
		"no exp":                sign(parts[0], payload(`{"jti":"x","scope":{}}`)),
		"trailing claims data":  sign(parts[0], payload(`{"jti":"x","exp":5,"scope":{}} {}`)),
		"claims not an object":  sign(parts[0], payload(`[1,2]`)),
		"oversized":             strings.Repeat("a", MaxTokenBytes+1),
		"signature of another":  parts[0] + "." + parts[1] + "." + b64.EncodeToString(ed25519.Sign(testKey(t), []byte(parts[0]+"."+parts[1]))),
		"non-canonical base64":  parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + "B",
		"header not JSON":       sign(hdr(`alg=EdDSA`), parts[1]),
		"header JSON with junk": sign(hdr(`{"alg":"EdDSA"}x`), parts[1]),
	}
	for name, tok := range bad {
		if _, err := parseToken(pub, tok); err == nil {
			t.Errorf("%s: accepted", name)
		} else if _, ok := err.(*TokenError); !ok {
			t.Errorf("%s: %T, want *TokenError", name, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub := key.Public().(ed25519.PublicKey)
	tok, _ := signToken(key, &Claims{ID: "jt-1", Expires: 2, Scope: Scope{Profile: "worker", Labels: map[string]string{"a": "b"}}})
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("..")
	f.Add(tok + "." + tok)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseToken(pub, s)
		if err != nil {
			if c != nil {
				t.Fatal("claims with an error")
			}
			if strings.Contains(err.Error(), s) && len(s) > 40 {
				t.Fatal("the error repeats the token")
			}
			return
		}
		// Whatever parses must have been signed by key: re-signing its claims must give
		// a token that verifies too, and the claims must be complete.
		if c.ID == "" || c.Expires == 0 {
			t.Fatalf("accepted incomplete claims %+v", c)
		}
	})
}

func TestCSRNames(t *testing.T) {
	key, _ := newP256()
	ok := []*x509.CertificateRequest{
		{},
		{Subject: pkix.Name{CommonName: "web-1"}},
		{Subject: pkix.Name{CommonName: "web-1"}, DNSNames: []string{"web-1"}},
		{DNSNames: []string{"web-1"}},
	}
	for i, tmpl := range ok {
		info, err := parseCSR(csrPEM(t, tmpl, key))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if err := info.checkName("web-1"); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if (tmpl.Subject.CommonName != "" || len(tmpl.DNSNames) > 0) && info.checkName("web-2") == nil {
			t.Fatalf("%d: a CSR naming web-1 passed for web-2", i)
		}
	}
	if _, err := parseCSR(csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a"}, DNSNames: []string{"b"}}, key)); err == nil {
		t.Fatal("CN and DNS SAN that differ: accepted")
	}
	two := csrPEM(t, nil, key) + csrPEM(t, nil, key)
	if _, err := parseCSR(two); err == nil || !strings.Contains(err.Error(), "data after") {
		t.Fatalf("two CSRs: %v", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := newP256()
	f.Add(csrPEM(f, nil, key))
	f.Add(csrPEM(f, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web-1"}, DNSNames: []string{"web-1"}}, key))
	f.Add(csrPEM(f, &x509.CertificateRequest{DNSNames: []string{"a", "b"}, EmailAddresses: []string{"x@y"}}, key))
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("")
	bound, err := agentwire.ChannelBoundCSR(key, make([]byte, channelBindingBytes))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bound)
	f.Fuzz(func(t *testing.T, s string) {
		info, err := parseCSR(s)
		if err != nil {
			return
		}
		if info.pub == nil || len(info.keyHash) != 64 {
			t.Fatalf("accepted without a key: %+v", info)
		}
		if info.channel != nil && len(info.channel) != channelBindingBytes {
			t.Fatalf("accepted a channel binding of %d bytes", len(info.channel))
		}
		if err := checkKeyStrength(info.pub); err != nil {
			t.Fatalf("accepted a key it refuses: %v", err)
		}
	})
}

func TestPolicyOddFacts(t *testing.T) {
	p, err := newPolicyEngine(0, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal([]byte(`{"memory_mb": 16384, "cpus": 8.0, "ratio": 0.5, "dmi": {"vendor": "Dell Inc."},
		"disks": [{"size_gb": 500}, {"size_gb": "unknown"}], "nested": {"a": {"b": {"c": null}}}, "big": 1e300}`), &raw)
	facts, err := policyFacts(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{"facts": facts, "token": map[string]any{"profile": "db"}, "request": map[string]any{"remote_ip": "10.0.0.5"}}
	cases := []struct {
		expr string
		want string // "" for true
	}{
		{`facts.memory_mb >= 8192 && facts.dmi.vendor == "Dell Inc."`, ""},
		{`facts.memory_mb >= 8192.0`, ""},
		{`facts.cpus == 8`, ""},
		{`facts.ratio < 1`, ""},
		{`token.profile == "db" && request.remote_ip.startsWith("10.")`, ""},
		{`"serial" in facts.dmi ? facts.dmi.serial != "" : true`, ""},
		{`has(facts.dmi.serial)`, "is false"},
		{`facts.memory_mb > 1000000`, "is false"},
		{`facts.dmi.serial == "x"`, "no such key: serial"},
		{`facts.missing.deeper == 1`, "no such key: missing"},
		{`facts.disks.all(d, d.size_gb > 100)`, "could not be evaluated"},
		{`facts.dmi.vendor > 5`, "could not be evaluated"},
		{`facts.nested.a.b.c.d == 1`, "could not be evaluated"},
		{`facts.memory_mb`, "returned int, not a bool"},
		{`facts.memory_mb >=`, "does not compile"},
		{`[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`, "could not be evaluated on these facts: operation"}, // cost limit or timeout
		{strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), "does not compile"},
	}
	for _, tc := range cases {
		err := p.check(context.Background(), "token", []string{tc.expr}, vars)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.expr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.expr, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "expression 0") {
			t.Errorf("%s: refusal does not name the expression: %v", tc.expr, err)
		}
	}
	deep := map[string]any{}
	cur := deep
	for i := 0; i < 40; i++ {
		n := map[string]any{}
		cur["x"] = n
		cur = n
	}
	if _, err := policyFacts(deep, 0); err == nil {
		t.Fatal("facts nested 40 deep accepted")
	}
	if err := ValidatePolicy([]string{"true", "facts.x =="}); err == nil || !strings.Contains(err.Error(), "policy[1]") {
		t.Fatalf("ValidatePolicy: %v", err)
	}
}
