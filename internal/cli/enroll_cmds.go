package cli

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/agent"
	"github.com/kilnhq/kiln/internal/agentwire"
	"github.com/kilnhq/kiln/internal/efisig"
	"github.com/kilnhq/kiln/internal/enroll"
)

// Enrollment commands: join tokens, the CA, machine certificates (operator side, over
// the API), and `kiln agent enroll` (machine side, over HTTPS to the enrollment port).

func newJoinTokenCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "join-token", Aliases: []string{"jointoken"}, Short: "Create, list and revoke join tokens (machine enrollment credentials)"}
	var (
		req    enroll.TokenRequest
		ttl    time.Duration
		output string
	)
	create := &cobra.Command{
		Use:   "create --profile PROFILE",
		Short: "Create a signed join token; it is printed once and never stored",
		Long: `Create a join token. The token is printed on standard output, alone, and is
not kept by Kiln (only its id, hash, scope and use count are): save it now.

Give it to an agent (kiln agent enroll --token), put it on the agent's kernel
command line through a profile, or bake it into an image for machines that do not
netboot. Scope it as narrowly as you can: --machine or --mac for one machine,
--cidr for a network, --max-uses for a batch, a short --ttl.`,
		Example: `  kiln join-token create --profile worker --max-uses 20 --ttl 2h --cidr 10.0.4.0/24
  kiln join-token create --profile db --machine db-7 --labels rack=r7 \
      --policy 'facts.memory_mb >= 65536' --policy 'facts.dmi.vendor == "Dell Inc."'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Profile == "" {
				return errors.New("--profile: required")
			}
			req.TTL = ttl.String()
			var out enroll.TokenCreated
			if err := call(cmd, g, http.MethodPost, "/api/v1/enroll/jointokens", nil, req, &out); err != nil {
				return err
			}
			if output == "json" {
				return writeIndentedJSON(cmd, out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			exp := "-"
			if out.ExpiresAt != nil {
				exp = out.ExpiresAt.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "join token %s: profile %s, %d use(s), expires %s; CA fingerprint %s\n", out.ID, out.Profile, out.MaxUses, exp, out.CAFingerprint)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.Profile, "profile", "", "profile of the machines it enrolls (required)")
	f.StringToStringVar(&req.Labels, "labels", nil, "labels given to machines it creates: k=v,k2=v2")
	f.IntVar(&req.MaxUses, "max-uses", 1, "how many enrollments it allows")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long it is valid (at most 8784h)")
	f.StringArrayVar(&req.MACs, "mac", nil, "only for a machine reporting this MAC (repeatable)")
	f.StringArrayVar(&req.CIDRs, "cidr", nil, "only from this network (repeatable)")
	f.StringVar(&req.Machine, "machine", "", "only for this machine (created if it does not exist)")
	f.StringArrayVar(&req.Policy, "policy", nil, "CEL expression over facts, token and request that must be true (repeatable)")
	outputFlag(f, &output, "token (the token alone) or json", "token", "json")

	var listBoot bool
	var listOut string
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens: scope and uses, never the tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out enroll.TokenList
			q := url.Values{}
			if listBoot {
				q.Set("boot", "true")
			}
			if err := call(cmd, g, http.MethodGet, "/api/v1/enroll/jointokens", q, nil, &out); err != nil {
				return err
			}
			if listOut == "json" {
				return writeIndentedJSON(cmd, out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tPROFILE\tUSES\tEXPIRES\tSCOPE\tSTATE")
			now := time.Now()
			for _, t := range out.Items {
				state := "valid"
				switch {
				case t.Revoked:
					state = "revoked"
				case t.ExpiresAt != nil && now.After(*t.ExpiresAt):
					state = "expired"
				case t.MaxUses > 0 && t.Uses >= t.MaxUses:
					state = "used"
				}
				exp := "-"
				if t.ExpiresAt != nil {
					exp = t.ExpiresAt.Local().Format("2006-01-02 15:04")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", t.ID, t.Profile, t.Uses, t.MaxUses, exp, tokenScope(t), state)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listBoot, "boot", false, "include per-boot tokens")
	outputFlag(list.Flags(), &listOut, "table or json", "table", "json")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := call(cmd, g, http.MethodPost, "/api/v1/enroll/jointokens/"+url.PathEscape(args[0])+"/revoke", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "jointoken/%s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func tokenScope(t enroll.TokenInfo) string {
	var p []string
	if t.Machine != "" {
		p = append(p, "machine="+t.Machine)
	}
	if len(t.MACs) > 0 {
		p = append(p, "mac="+strings.Join(t.MACs, ","))
	}
	if len(t.CIDRs) > 0 {
		p = append(p, "cidr="+strings.Join(t.CIDRs, ","))
	}
	if len(p) == 0 {
		return "-"
	}
	return strings.Join(p, " ")
}

func writeIndentedJSON(cmd *cobra.Command, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return err
}

func newCACmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Kiln's certificate authority"}
	var (
		fpOnly     bool
		bootCA     bool
		efiSigList string
	)
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the CA certificate and its SHA-256 fingerprint (what agents pin), or the boot CA (what firmware trusts for HTTPS boot)",
		Long: `Print the CA certificate and its SHA-256 fingerprint (what agents pin).

--boot prints the RSA boot CA instead: the root UEFI firmware and iPXE must trust
for HTTPS boot (firmware setup or the BMC: "HTTPS boot certificates", i.e. the
TlsCaCertificate variable). --efi-siglist FILE writes it as one EFI_SIGNATURE_LIST,
the form of that variable; with QEMU and OVMF:
  -fw_cfg name=etc/edk2/https/cacerts,file=FILE`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ca enroll.CAInfo
			if err := call(cmd, g, http.MethodGet, "/api/v1/enroll/ca", nil, nil, &ca); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if bootCA || efiSigList != "" {
				if ca.Boot == nil {
					return errors.New("this server has no boot CA: start it with --boot-ca or --boot-https efi|always")
				}
				if efiSigList != "" {
					b, _ := pem.Decode([]byte(ca.Boot.Certificate))
					if b == nil {
						return errors.New("boot CA: the server sent no PEM certificate")
					}
					list, err := efisig.X509List(b.Bytes, efisig.KilnOwner())
					if err != nil {
						return err
					}
					if err := os.WriteFile(efiSigList, list, 0o644); err != nil {
						return fmt.Errorf("write EFI signature list: %w", err)
					}
					fmt.Fprintf(w, "%s: boot CA %s as an EFI_SIGNATURE_LIST (%d bytes)\n", efiSigList, ca.Boot.Fingerprint, len(list))
					return nil
				}
				if fpOnly {
					fmt.Fprintln(w, ca.Boot.Fingerprint)
					return nil
				}
				fmt.Fprintf(w, "Subject:      %s (boot CA: firmware and iPXE HTTPS)\nValid:        %s to %s\nSHA-256:      %s\n\n%s",
					ca.Boot.Subject, ca.Boot.NotBefore.Format(time.RFC3339), ca.Boot.NotAfter.Format(time.RFC3339), ca.Boot.Fingerprint, ca.Boot.Certificate)
				return nil
			}
			if fpOnly {
				fmt.Fprintln(w, ca.Fingerprint)
				return nil
			}
			origin := "created by Kiln"
			if ca.Imported {
				origin = "imported"
			}
			fmt.Fprintf(w, "Subject:      %s (%s)\nIssuer:       %s\nValid:        %s to %s\nSHA-256:      %s\n\n%s",
				ca.Subject, origin, ca.Issuer, ca.NotBefore.Format(time.RFC3339), ca.NotAfter.Format(time.RFC3339), ca.Fingerprint, ca.Certificate)
			return nil
		},
	}
	show.Flags().BoolVar(&fpOnly, "fingerprint", false, "print the fingerprint only")
	show.Flags().BoolVar(&bootCA, "boot", false, "show the RSA boot CA (HTTPS boot trust) instead of the CA")
	show.Flags().StringVar(&efiSigList, "efi-siglist", "", "write the boot CA as an EFI_SIGNATURE_LIST to this file (TlsCaCertificate)")
	cmd.AddCommand(show)
	return cmd
}

// enrollMachineCmds are the certificate subcommands of `kiln machine`.
func enrollMachineCmds(g *globalFlags) []*cobra.Command {
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a machine's certificates: the agent API refuses them at once, and /crl lists them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res enroll.RevokeResult
			if err := call(cmd, g, http.MethodPost, "/api/v1/enroll/machines/"+url.PathEscape(args[0])+"/revoke", nil, nil, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s: revoked certificate serial %s\n", res.Machine, strings.Join(res.Serials, ", "))
			return nil
		},
	}
	var (
		outDir  string
		keyType string
		ttl     time.Duration
	)
	cert := &cobra.Command{
		Use:   "cert NAME --out DIR",
		Short: "Issue a client certificate and key to build into a machine's iPXE (boot by client certificate)",
		Long: `Issue a client certificate and key for a machine and write them to DIR as
NAME.crt, NAME.key (mode 0600) and ca.crt. Build them into the machine's iPXE
(make bin-x86_64-efi/ipxe.efi CERT=NAME.crt PRIVKEY=NAME.key TRUST=ca.crt) with an
embedded script that chains https://KILN:PORT/ipxe/by-cert: Kiln then serves that
machine's boot script only to it. The key is not kept by Kiln; kiln machine revoke
NAME revokes the certificate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if outDir == "" {
				return errors.New("--out: required")
			}
			req := enroll.BootCertRequest{KeyType: keyType}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			var bc enroll.BootCert
			if err := call(cmd, g, http.MethodPost, "/api/v1/enroll/machines/"+url.PathEscape(args[0])+"/bootcert", nil, req, &bc); err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return err
			}
			files := []struct {
				name, data string
				mode       os.FileMode
			}{
				{bc.Machine + ".key", bc.Key, 0o600},
				{bc.Machine + ".crt", bc.Certificate, 0o644},
				{"ca.crt", bc.CA, 0o644},
			}
			for _, f := range files {
				p := filepath.Join(outDir, f.name)
				if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
					return err
				}
				if err := os.Chmod(p, f.mode); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s: boot certificate serial %s (SHA-256 %s), expires %s, written to %s\n",
				bc.Machine, bc.Serial, bc.Fingerprint, bc.NotAfter.Local().Format(time.RFC3339), outDir)
			return nil
		},
	}
	cert.Flags().StringVar(&outDir, "out", "", "directory to write NAME.crt, NAME.key and ca.crt to (required)")
	cert.Flags().StringVar(&keyType, "key-type", "rsa", "rsa (RSA-2048, every iPXE build) or ecdsa")
	cert.Flags().DurationVar(&ttl, "ttl", 0, "validity (default: the server's, one year)")
	return []*cobra.Command{revoke, cert}
}

// agentEnrollCmds are the enrollment subcommands of `kiln agent`. They take the
// agent's --server and --join-token, never the operator's --token or KILN_TOKEN.
func agentEnrollCmds(af *agentFlags) []*cobra.Command {
	var (
		fp, dir      string
		fromCmdline  bool
		timeout      time.Duration
		pollInterval time.Duration
	)
	enrollCmd := &cobra.Command{
		Use:   "enroll --server https://KILN:PORT --ca-fingerprint SHA256 --join-token TOKEN",
		Short: "Enroll this machine with Kiln: make a key, get a certificate, store both",
		Long: `Enroll this machine: generate a key pair here (the private key never leaves
the machine), send Kiln a certificate request, the join token and this host's
facts, and store the key, the certificate and the pinned CA in --dir (mode 0700).

Kiln is trusted only if its TLS chain holds the CA with the given SHA-256
fingerprint (kiln ca show --fingerprint). Works on any Linux host; in the netboot
environment --from-cmdline reads kiln.server, kiln.ca_fingerprint and kiln.token
from /proc/cmdline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			server, token := af.server, af.joinToken
			if fromCmdline {
				b, err := os.ReadFile("/proc/cmdline")
				if err != nil {
					return fmt.Errorf("--from-cmdline: %w", err)
				}
				s, f, t := agent.CmdlineEnrollment(string(b))
				if server == "" {
					server = s
				}
				if fp == "" {
					fp = f
				}
				if token == "" {
					token = t
				}
			}
			if server == "" {
				server = agent.TokenIssuer(token)
			}
			if server == "" && fp != "" {
				// Neither given nor named by the token: DNS SRV. The server found is
				// trusted only if its chain holds the CA of --ca-fingerprint.
				var err error
				if server, err = af.discoverServer(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "found kiln by DNS SRV: %s\n", server)
			}
			switch {
			case server == "":
				return errors.New("--server: required (Kiln's https:// enrollment URL; the token names none)")
			case fp == "":
				return errors.New("--ca-fingerprint: required (kiln ca show --fingerprint)")
			}
			// Without a token the request waits for an operator, if Kiln allows that
			// (kiln serve --enroll-approval-without-token).
			onPending := func(p agentwire.EnrollPending) {
				fmt.Fprintf(cmd.ErrOrStderr(), "enrollment request %s waits for an operator: kiln enrollment approve %s (expires %s)\n",
					p.ID, p.ID, p.ExpiresAt.Local().Format(time.RFC3339))
			}
			dialer, err := af.dialer()
			if err != nil {
				return err
			}
			id, err := agent.Enroll(cmdContext(cmd), agent.EnrollOptions{Server: server, CAFingerprint: fp, Token: token, Dir: dir, Timeout: timeout,
				PollInterval: pollInterval, OnPending: onPending, Dialer: dialer})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled as machine %s: certificate serial %s, expires %s (renew after %s); stored in %s\n",
				id.Machine, id.Cert.SerialNumber.Text(16), id.Cert.NotAfter.Local().Format(time.RFC3339), id.RenewAt().Local().Format(time.RFC3339), id.Dir)
			return nil
		},
	}
	ef := enrollCmd.Flags()
	ef.StringVar(&fp, "ca-fingerprint", "", "SHA-256 fingerprint of Kiln's CA certificate (hex, colons allowed)")
	ef.StringVar(&dir, "dir", agent.DefaultDir, "directory for the key, certificate and CA (created with mode 0700)")
	ef.BoolVar(&fromCmdline, "from-cmdline", false, "take what is not given from kiln.* parameters on /proc/cmdline")
	ef.DurationVar(&timeout, "enroll-timeout", 60*time.Second, "timeout of each enrollment request (not of the wait for an operator's approval)")
	ef.DurationVar(&pollInterval, "poll-interval", 5*time.Second, "first wait between polls of a request that waits for approval (backs off to a minute)")

	var (
		renewDir string
		force    bool
	)
	renew := &cobra.Command{
		Use:   "renew",
		Short: "Renew this machine's certificate (with a new key) if two thirds of its lifetime have passed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := agent.Load(renewDir)
			if err != nil {
				return err
			}
			if !force && time.Now().Before(id.RenewAt()) {
				fmt.Fprintf(cmd.OutOrStdout(), "machine %s: certificate serial %s is valid until %s; not renewing before %s (--force to renew now)\n",
					id.Machine, id.Cert.SerialNumber.Text(16), id.Cert.NotAfter.Local().Format(time.RFC3339), id.RenewAt().Local().Format(time.RFC3339))
				return nil
			}
			next, err := id.Renew(cmdContext(cmd))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine %s: renewed, certificate serial %s expires %s\n", next.Machine, next.Cert.SerialNumber.Text(16), next.Cert.NotAfter.Local().Format(time.RFC3339))
			return nil
		},
	}
	renew.Flags().StringVar(&renewDir, "dir", agent.DefaultDir, "identity directory")
	renew.Flags().BoolVar(&force, "force", false, "renew now")
	return []*cobra.Command{enrollCmd, renew}
}
