package discovery

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestSearchDomains(t *testing.T) {
	cases := []struct {
		name, conf string
		want       []string
	}{
		{"search list", "nameserver 10.0.0.1\nsearch lab.example.org example.org.\n", []string{"lab.example.org", "example.org"}},
		{"domain only", "domain site.test\nnameserver 10.0.0.1\n", []string{"site.test"}},
		{"search beats domain", "domain a.test\nsearch b.test c.test\n", []string{"b.test", "c.test"}},
		{"last search wins", "search a.test\nsearch b.test\n", []string{"b.test"}},
		{"comments", "# search no.test\nsearch yes.test # trailing\n; domain no2.test\n", []string{"yes.test"}},
		{"none", "nameserver 10.0.0.1\noptions ndots:2\n", nil},
		{"empty", "", nil},
		{"keyword alone", "search\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := SearchDomains(strings.NewReader(c.conf))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("SearchDomains = %q, want %q", got, c.want)
			}
		})
	}
}

func TestResolverRefusesANameForTheDNSServer(t *testing.T) {
	for _, s := range []string{"dns.example.org", "dns.example.org:53", "10.0.0.1:x:y", ":53"} {
		if _, err := Resolver(s); err == nil || !strings.Contains(err.Error(), "not an IP address") {
			t.Errorf("Resolver(%q): %v, want an error", s, err)
		}
	}
	for _, s := range []string{"", "127.0.0.1", "127.0.0.1:5353", "[::1]:53", "::1"} {
		if _, err := Resolver(s); err != nil {
			t.Errorf("Resolver(%q): %v", s, err)
		}
	}
}

func TestTargetURLIsHTTPS(t *testing.T) {
	for _, c := range []struct {
		t    Target
		want string
	}{
		{Target{Host: "kiln.lab.test", Port: 8443}, "https://kiln.lab.test:8443"},
		{Target{Host: "::1", Port: 443}, "https://[::1]:443"},
	} {
		if got := c.t.URL(); got != c.want {
			t.Errorf("URL() = %q, want %q", got, c.want)
		}
	}
}

func TestFindNeedsADomain(t *testing.T) {
	_, err := Find(context.Background(), Options{})
	if err == nil || !strings.Contains(err.Error(), "--dns-domain") {
		t.Fatalf("Find without domains: %v, want an error naming --dns-domain", err)
	}
	if _, err := Lookup(context.Background(), nil, " . "); err == nil || !strings.Contains(err.Error(), "DNS domain: empty") {
		t.Fatalf("Lookup of an empty domain: %v", err)
	}
}

func FuzzSearchDomains(f *testing.F) {
	for _, s := range []string{"search a.test b.test\n", "domain x\n", "search\n", "#\n;search z\n", "search a.\x00b\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, conf string) {
		got, err := SearchDomains(strings.NewReader(conf))
		if err != nil {
			return // a line longer than the scanner's buffer
		}
		for _, d := range got {
			if d == "" || strings.ContainsAny(d, " \t\n#;") {
				t.Fatalf("domain %q from %q", d, conf)
			}
		}
	})
}
