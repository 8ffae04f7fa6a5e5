package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/doctor"
	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/store/postgres"
	"github.com/kilnhq/kiln/internal/store/sqlite"
)

// doctorSettings are the kiln serve settings the doctor checks; they keep serve's
// flag names and defaults, so that it reads the same kiln.yaml.
type doctorSettings struct {
	configFile, defaultConfig                  string
	listen, httpsListen, apiListen, tftpListen string
	dhcpInterfaces                             []string
	ipxeDir, kekFile                           string
	database                                   string
	rogueWait                                  time.Duration
	allowDHCPServers                           []string
	skipRogue                                  bool
	certWarn                                   time.Duration
}

func newDoctorCmd(g *globalFlags) *cobra.Command {
	var s doctorSettings
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host for what kiln serve needs, and report each problem with its fix",
		Long: `Check this host before and while kiln serve runs: listen ports free (a port in
use is expected while Kiln serves), the DHCP interfaces up with an IPv4 address,
the interfaces the Subnets name (through the API, when it answers), the iPXE
binaries (present, version, HTTPS support), the KEK file's mode, the CA
certificate's expiry, the data dir's free space, the database (schema version
against this binary's, SQLite's quick_check, the PostgreSQL server's clock
against this host's; nothing is migrated or written), and other DHCP servers on each --dhcp-interface: a
DHCPDISCOVER is broadcast and every OFFER from an address that is not this host's
(nor an --allow-dhcp-server) is reported.

It reads the settings kiln serve reads (its flags, KILN_* variables and
/etc/kiln/kiln.yaml, or --config). Exits 1 when a check fails. The DHCP check
needs root (UDP port 68).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			file, err := serveConfigFile(s.configFile, s.defaultConfig)
			if err != nil {
				return err
			}
			if file != "" {
				if err := bindKnownSettings(cmd.Flags(), file); err != nil {
					return err
				}
			}
			findings := runDoctor(cmdContext(cmd), cmd, g, s)
			worst := doctor.Report(cmd.OutOrStdout(), findings)
			if worst == doctor.Fail {
				return errors.New("doctor: some checks failed (see fix: lines)")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.configFile, "config", "", "kiln serve's YAML config file; default "+DefaultConfigFile+" when it exists (env KILN_CONFIG)")
	f.StringVar(&s.defaultConfig, "default-config", DefaultConfigFile, "config file read when --config is not given and it exists (env KILN_DEFAULT_CONFIG)")
	f.MarkHidden("default-config")
	f.StringVar(&s.listen, "listen", "0.0.0.0:8080", "kiln serve's HTTP listen address (env KILN_LISTEN)")
	f.StringVar(&s.httpsListen, "https-listen", "0.0.0.0:8443", "kiln serve's HTTPS listen address (env KILN_HTTPS_LISTEN)")
	f.StringVar(&s.apiListen, "api-listen", "", "kiln serve's operator API address (env KILN_API_LISTEN)")
	f.StringVar(&s.tftpListen, "tftp-listen", "0.0.0.0:69", "kiln serve's TFTP address (env KILN_TFTP_LISTEN)")
	f.StringArrayVar(&s.dhcpInterfaces, "dhcp-interface", nil, "interfaces kiln serve answers DHCP on (repeatable) (env KILN_DHCP_INTERFACE)")
	f.StringVar(&s.ipxeDir, "ipxe-dir", "/usr/lib/ipxe", "directory of iPXE binaries (env KILN_IPXE_DIR)")
	f.StringVar(&s.kekFile, "kek-file", "", "key-encryption key file; default <data-dir>/kek.key (env KILN_KEK_FILE)")
	f.StringVar(&s.database, "database", "", "kiln serve's database: empty for SQLite in the data dir, or postgres://... (env KILN_DATABASE)")
	f.DurationVar(&s.rogueWait, "dhcp-wait", 3*time.Second, "how long to collect DHCP OFFERs on each interface (env KILN_DHCP_WAIT)")
	f.StringArrayVar(&s.allowDHCPServers, "allow-dhcp-server", nil, "address of a DHCP server that is Kiln's (another replica's), besides this host's addresses (repeatable) (env KILN_ALLOW_DHCP_SERVER)")
	f.BoolVar(&s.skipRogue, "skip-dhcp-check", false, "do not broadcast a DHCPDISCOVER (env KILN_SKIP_DHCP_CHECK)")
	f.DurationVar(&s.certWarn, "cert-warn", 30*24*time.Hour, "warn when a certificate expires sooner than this (env KILN_CERT_WARN)")
	return cmd
}

// bindKnownSettings sets, from kiln serve's config file, the doctor flags it
// names that neither the command line nor the environment set. Unlike serve, keys
// the doctor has no flag for are skipped: they are serve's other settings.
func bindKnownSettings(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for k, v := range vals {
		f := fs.Lookup(k)
		if f == nil || k == "config" || f.Changed {
			continue
		}
		if _, inEnv := os.LookupEnv(envName(k)); inEnv {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for _, e := range list {
			if err := fs.Set(k, fmt.Sprint(e)); err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

func runDoctor(ctx context.Context, cmd *cobra.Command, g *globalFlags, s doctorSettings) []doctor.Finding {
	var out []doctor.Finding
	for _, p := range []struct{ what, addr string }{{"listen", s.listen}, {"https-listen", s.httpsListen}, {"api-listen", s.apiListen}} {
		if p.addr != "" {
			out = append(out, doctor.CheckTCPPort(p.what, p.addr))
		}
	}
	if s.tftpListen != "" {
		out = append(out, doctor.CheckUDPPort("tftp-listen", s.tftpListen))
	}
	if len(s.dhcpInterfaces) > 0 {
		out = append(out, doctor.CheckUDPPort("dhcp", "0.0.0.0:67"))
	}
	for _, iface := range s.dhcpInterfaces {
		out = append(out, doctor.CheckInterface(iface))
	}
	out = append(out, subnetFindings(cmd, g)...)
	out = append(out, doctor.CheckIPXE(s.ipxeDir)...)
	out = append(out, doctor.CheckKEKFile(cmp.Or(s.kekFile, filepath.Join(g.dataDir, enroll.KEKFileName))))
	out = append(out, doctor.CheckCertificate("CA", filepath.Join(g.dataDir, enroll.CACertFileName), time.Now(), s.certWarn))
	out = append(out, databaseFindings(ctx, g.dataDir, s.database)...)
	if !s.skipRogue {
		ours := hostAddrs()
		for _, a := range s.allowDHCPServers {
			if ip, err := netip.ParseAddr(a); err == nil {
				ours = append(ours, ip)
			} else {
				out = append(out, doctor.Finding{Check: "allow-dhcp-server", Status: doctor.Fail, Detail: fmt.Sprintf("%q is not an IP address", a), Fix: "give an address"})
			}
		}
		for _, iface := range s.dhcpInterfaces {
			out = append(out, doctor.CheckRogueDHCP(ctx, iface, s.rogueWait, ours))
		}
	}
	return out
}

// databaseFindings checks the data dir's free space and the store: its schema
// version against this binary's, its integrity (SQLite's quick_check) and, for
// PostgreSQL, its server's clock against this host's. Nothing is migrated or
// written: SQLite is opened query-only.
func databaseFindings(ctx context.Context, dataDir, database string) []doctor.Finding {
	out := []doctor.Finding{doctor.CheckFreeSpace(dataDir, doctor.FreeWarnBytes, doctor.FreeFailBytes)}
	scheme, rest, _ := strings.Cut(database, "://")
	switch {
	case database == "" || strings.EqualFold(scheme, "sqlite"):
		dir := dataDir
		if strings.HasPrefix(rest, "/") {
			dir = rest
		}
		path := filepath.Join(dir, sqlite.FileName)
		what := "SQLite " + path
		db, err := sqlite.OpenExisting(ctx, path)
		if err != nil {
			return append(out, doctor.Finding{Check: "database", Status: doctor.Warn, Detail: err.Error(),
				Fix: "none before kiln serve's first start; otherwise give --data-dir (or --database) as kiln serve has it"})
		}
		defer db.Close()
		v, err := sqlite.SchemaVersion(ctx, db)
		if err != nil {
			out = append(out, doctor.Finding{Check: "database schema", Status: doctor.Fail, Detail: fmt.Sprintf("%s: %v", what, err),
				Fix: "is it a Kiln database? check --data-dir; restore the last good backup if it is damaged"})
		} else {
			out = append(out, doctor.CheckSchemaVersion(what, v, sqlite.LatestSchemaVersion()))
		}
		out = append(out, doctor.CheckIntegrity(what, sqlite.QuickCheck(ctx, db)), doctor.ClockSkewNotApplicable())
	case strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql"):
		db, err := postgres.OpenExisting(ctx, database)
		if err != nil {
			return append(out, doctor.Finding{Check: "database", Status: doctor.Fail, Detail: err.Error(),
				Fix: "check --database (host, port, user, password, database name) and that PostgreSQL accepts this host's connections"})
		}
		defer db.Close()
		v, err := postgres.SchemaVersion(ctx, db)
		if err != nil {
			out = append(out, doctor.Finding{Check: "database schema", Status: doctor.Fail, Detail: "PostgreSQL: " + err.Error(),
				Fix: "grant kiln's database user access to its tables, or check --database names Kiln's database"})
		} else {
			out = append(out, doctor.CheckSchemaVersion("PostgreSQL", v, postgres.LatestSchemaVersion()))
		}
		out = append(out, doctor.Finding{Check: "database integrity", Detail: "n/a for PostgreSQL here (pg_amcheck checks its indexes and heap)"})
		before := time.Now()
		serverNow, err := postgres.ServerTime(ctx, db)
		after := time.Now()
		if err != nil {
			out = append(out, doctor.Finding{Check: "clock skew to the database", Status: doctor.Warn, Detail: err.Error(),
				Fix: "check that kiln's database user may run SELECT now()"})
		} else {
			out = append(out, doctor.CheckClockSkew(serverNow, before, after))
		}
	default:
		out = append(out, doctor.Finding{Check: "database", Status: doctor.Fail, Detail: fmt.Sprintf("--database scheme %q is not supported", scheme),
			Fix: "use postgres://..., sqlite:///dir, or nothing (SQLite in the data dir)"})
	}
	return out
}

// subnetFindings checks the interfaces the Subnets name, read through the API;
// without an API to ask, that is a warning, not a failure.
func subnetFindings(cmd *cobra.Command, g *globalFlags) []doctor.Finding {
	subnets := map[string][]string{}
	cont := ""
	for {
		q := url.Values{}
		if cont != "" {
			q.Set("continue", cont)
		}
		var page api.ListResponse
		if err := call(cmd, g, http.MethodGet, "/api/v1/subnets", q, nil, &page); err != nil {
			return []doctor.Finding{{Check: "subnets", Status: doctor.Warn, Detail: "not checked: " + err.Error(),
				Fix: "run while kiln serve answers (--server, --token) to check the interfaces Subnets name"}}
		}
		for _, o := range page.Items {
			if spec, err := resource.Typed[resource.SubnetSpec](o); err == nil {
				subnets[o.Metadata.Name] = spec.Interfaces
			}
		}
		if page.Continue == "" {
			break
		}
		cont = page.Continue
	}
	if len(subnets) == 0 {
		return []doctor.Finding{{Check: "subnets", Status: doctor.OK, Detail: "none defined"}}
	}
	return doctor.CheckSubnetInterfaces(subnets)
}

// hostAddrs are this host's addresses: an OFFER from one of them is Kiln's own.
func hostAddrs() []netip.Addr {
	var out []netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
