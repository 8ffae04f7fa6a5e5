package resource

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/minisign"
)

// Kind describes one resource kind: its names, its spec type and how it is checked.
type Kind struct {
	Name     string   // "Machine"
	Plural   string   // "machines" (the API path segment)
	Aliases  []string // accepted by the CLI: "machine", "m"
	SpecType reflect.Type
	// ReadOnly kinds are written by Kiln only (events, audit entries are not here at all).
	ReadOnly bool
	// Columns for `kiln get` tables, after NAME.
	Columns []Column
	// WideColumns are added after Columns by `kiln get -o wide`.
	WideColumns []Column
}

// Column is one extra column in `kiln get` tables; Path is a dotted JSON path into the object.
type Column struct {
	Header string
	Path   string
}

// Spec is implemented by every kind's spec type.
type Spec interface {
	// Validate checks the spec alone; errors carry the field path under spec.
	Validate() error
}

// UniqueKeyer is implemented by specs that claim inventory-wide unique keys
// (a MAC address belongs to one machine). The store enforces and indexes them.
type UniqueKeyer interface {
	UniqueKeys() []string
}

// Kinds lists every kind an operator can manage, in apply order (referenced kinds first).
var kinds = []*Kind{
	{Name: "Artifact", Plural: "artifacts", Aliases: []string{"artifact", "art"}, SpecType: reflect.TypeOf(ArtifactSpec{}),
		Columns: []Column{{"SOURCE", "spec.source"}, {"SHA256", "spec.sha256"}}},
	{Name: "Template", Plural: "templates", Aliases: []string{"template", "tpl", "tmpl"}, SpecType: reflect.TypeOf(TemplateSpec{}),
		Columns: []Column{{"ACTIONS", "spec.actions.#"}, {"TIMEOUT", "spec.timeout"}}},
	{Name: "Secret", Plural: "secrets", Aliases: []string{"secret", "sec"}, SpecType: reflect.TypeOf(SecretSpec{}),
		Columns: []Column{{"MACHINES", "spec.machines"}, {"MACHINE-LABELS", "spec.labels"}, {"VERSION", "status.version"}}},
	{Name: "Profile", Plural: "profiles", Aliases: []string{"profile", "prof", "pr"}, SpecType: reflect.TypeOf(ProfileSpec{}),
		Columns: []Column{{"KERNEL", "spec.boot.kernel"}, {"AGENT", "spec.boot.agent"}, {"WORKFLOW", "spec.workflow"}}},
	{Name: "Subnet", Plural: "subnets", Aliases: []string{"subnet", "net", "sn"}, SpecType: reflect.TypeOf(SubnetSpec{}),
		Columns: []Column{{"CIDR", "spec.cidr"}, {"MODE", "spec.mode"}, {"ROUTER", "spec.router"}}},
	{Name: "Machine", Plural: "machines", Aliases: []string{"machine", "m"}, SpecType: reflect.TypeOf(MachineSpec{}),
		Columns:     []Column{{"PROFILE", "spec.profile"}, {"MAC", "spec.interfaces.0.mac"}, {"IP", "spec.interfaces.0.ip"}, {"STATE", "status.state"}},
		WideColumns: []Column{{"HOSTNAME", "spec.interfaces.0.hostname"}, {"INTERFACES", "spec.interfaces.#"}, {"BMC", "spec.bmc.address"}, {"LAST-SEEN", "status.lastSeen"}}},
	{Name: "JoinToken", Plural: "jointokens", Aliases: []string{"jointoken", "join-token", "jt"}, SpecType: reflect.TypeOf(JoinTokenSpec{}),
		Columns: []Column{{"PROFILE", "spec.profile"}, {"USES", "status.uses"}, {"MAX", "spec.maxUses"}, {"EXPIRES", "spec.expiresAt"}}},
	{Name: "Workflow", Plural: "workflows", Aliases: []string{"workflow", "wf"}, SpecType: reflect.TypeOf(WorkflowSpec{}),
		Columns: []Column{{"MACHINE", "spec.machine"}, {"TEMPLATE", "spec.template"}, {"STATE", "status.state"}}},
	{Name: "PowerJob", Plural: "powerjobs", Aliases: []string{"powerjob", "pj"}, SpecType: reflect.TypeOf(PowerJobSpec{}), ReadOnly: true,
		Columns: []Column{{"MACHINE", "spec.machine"}, {"OP", "spec.op"}, {"STATE", "status.state"}, {"ATTEMPTS", "status.attempts"}, {"ERROR", "status.error"}}},
	{Name: "Enrollment", Plural: "enrollments", Aliases: []string{"enrollment", "enr"}, SpecType: reflect.TypeOf(EnrollmentSpec{}), ReadOnly: true,
		Columns: []Column{{"STATE", "spec.state"}, {"SOURCE", "spec.source"}, {"MACS", "spec.macs"}, {"HOSTNAME", "spec.hostname"}, {"MACHINE", "spec.machine"}}},
	{Name: "Lease", Plural: "leases", Aliases: []string{"lease"}, SpecType: reflect.TypeOf(LeaseSpec{}),
		Columns: []Column{{"MAC", "spec.mac"}, {"SUBNET", "spec.subnet"}, {"STATE", "spec.state"}, {"EXPIRES", "spec.expiresAt"}}},
	{Name: "Webhook", Plural: "webhooks", Aliases: []string{"webhook", "wh"}, SpecType: reflect.TypeOf(WebhookSpec{}),
		Columns: []Column{{"URL", "spec.url"}, {"TYPES", "spec.events.types"}, {"SECRET", "spec.secretRef"}}},
}

// Kinds returns every kind in apply order.
func Kinds() []*Kind { return kinds }

// LookupKind finds a kind by name, plural or alias, case-insensitively.
func LookupKind(s string) (*Kind, bool) {
	l := strings.ToLower(s)
	for _, k := range kinds {
		if strings.ToLower(k.Name) == l || k.Plural == l {
			return k, true
		}
		for _, a := range k.Aliases {
			if a == l {
				return k, true
			}
		}
	}
	return nil, false
}

// Order is the position of a kind in apply order (unknown kinds last).
func Order(kind string) int {
	for i, k := range kinds {
		if k.Name == kind {
			return i
		}
	}
	return len(kinds)
}

// KindNames lists the kind names, for error messages.
func KindNames() string {
	n := make([]string, len(kinds))
	for i, k := range kinds {
		n[i] = k.Name
	}
	return strings.Join(n, ", ")
}

// ---- specs ----------------------------------------------------------------

// Interface is one network interface of a machine.
type Interface struct {
	Name     string `json:"name,omitempty"`
	MAC      string `json:"mac"`
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// BMC tells how to reach a machine's baseboard management controller. Credentials are
// a Secret reference, never inline.
type BMC struct {
	Driver            string `json:"driver"`
	Address           string `json:"address"`
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
	CAFingerprint     string `json:"caFingerprint,omitempty"`
	// BootMode is the firmware mode a one-time network or disk boot asks for:
	// uefi or legacy (Redfish BootSourceOverrideMode, IPMI's EFI boot flag);
	// empty leaves the BMC's setting as it is.
	BootMode string `json:"bootMode,omitempty"`
}

// MachineSpec is what an operator declares about a machine.
type MachineSpec struct {
	Profile    string      `json:"profile,omitempty"`
	Interfaces []Interface `json:"interfaces,omitempty"`
	BMC        *BMC        `json:"bmc,omitempty"`
	// Enrollment overrides the profile's spec.enrollment for this machine.
	Enrollment string `json:"enrollment,omitempty"`
	// TPM pins the machine's TPM (spec.enrollment: tpm).
	TPM *MachineTPM `json:"tpm,omitempty"`
}

// Machine states, kept in status.state.
const (
	StateNew          = "new"
	StateProvisioning = "provisioning"
	StateProvisioned  = "provisioned"
	StateFailed       = "failed"
)

// MachineStatus is what Kiln learned about a machine.
type MachineStatus struct {
	State           string         `json:"state,omitempty"`
	Facts           map[string]any `json:"facts,omitempty"`
	CertFingerprint string         `json:"certFingerprint,omitempty"`
	CertSerial      string         `json:"certSerial,omitempty"`
	CertNotAfter    *time.Time     `json:"certNotAfter,omitempty"`
	EnrolledAt      *time.Time     `json:"enrolledAt,omitempty"`
	CertRevokedAt   *time.Time     `json:"certRevokedAt,omitempty"`
	LastSeen        *time.Time     `json:"lastSeen,omitempty"`
	// A/B slots (image2slot): the slot the machine last reported booting, its
	// image's version, the slot before it, and how many upgrades fell back.
	Slot         string       `json:"slot,omitempty"`
	SlotVersion  string       `json:"slotVersion,omitempty"`
	PreviousSlot string       `json:"previousSlot,omitempty"`
	Rollbacks    int          `json:"rollbacks,omitempty"`
	SlotUpgrade  *SlotUpgrade `json:"slotUpgrade,omitempty"`
}

// SlotUpgrade is a slot written and set to boot next, until the machine reports
// which slot it came up in.
type SlotUpgrade struct {
	Slot     string    `json:"slot"`
	Version  string    `json:"version"`
	Workflow string    `json:"workflow"`
	Since    time.Time `json:"since"`
	// Deadline is when Kiln stops waiting for the new slot to phone home.
	Deadline *time.Time `json:"deadline,omitempty"`
}

func (s *MachineSpec) Validate() error {
	if s.Profile != "" {
		if err := ValidateName(s.Profile); err != nil {
			return fmt.Errorf("spec.profile: %q is not a valid profile name", s.Profile)
		}
	}
	seen := map[string]int{}
	for i, ifc := range s.Interfaces {
		p := fmt.Sprintf("spec.interfaces[%d]", i)
		if ifc.MAC == "" {
			return fmt.Errorf("%s.mac: required", p)
		}
		mac, err := NormalizeMAC(ifc.MAC)
		if err != nil {
			return fmt.Errorf("%s.mac: %q is not a MAC address", p, ifc.MAC)
		}
		if j, dup := seen[mac]; dup {
			return fmt.Errorf("%s.mac: %s is also spec.interfaces[%d].mac", p, mac, j)
		}
		seen[mac] = i
		s.Interfaces[i].MAC = mac
		if ifc.IP != "" {
			if a, err := netip.ParseAddr(ifc.IP); err != nil || !a.Is4() {
				return fmt.Errorf("%s.ip: %q is not an IPv4 address", p, ifc.IP)
			}
		}
		if ifc.Hostname != "" && !ValidHostname(ifc.Hostname) {
			return fmt.Errorf("%s.hostname: %q is not a valid hostname", p, ifc.Hostname)
		}
	}
	if err := validateEnrollmentMode("spec.enrollment", s.Enrollment); err != nil {
		return err
	}
	if err := s.TPM.validate("spec.tpm"); err != nil {
		return err
	}
	if b := s.BMC; b != nil {
		switch b.Driver {
		case "ipmi", "redfish", "qemu":
		case "":
			return fmt.Errorf("spec.bmc.driver: required (ipmi, redfish or qemu)")
		default:
			return fmt.Errorf("spec.bmc.driver: %q is not one of ipmi, redfish, qemu", b.Driver)
		}
		if b.Address == "" {
			return fmt.Errorf("spec.bmc.address: required")
		}
		if b.CredentialsSecret != "" && ValidateName(b.CredentialsSecret) != nil {
			return fmt.Errorf("spec.bmc.credentialsSecret: %q is not a valid secret name", b.CredentialsSecret)
		}
		if b.CAFingerprint != "" && !sha256HexOK(strings.ReplaceAll(b.CAFingerprint, ":", "")) {
			return fmt.Errorf("spec.bmc.caFingerprint: not a SHA-256 fingerprint (64 hex digits)")
		}
		switch b.BootMode {
		case "", "uefi", "legacy":
		default:
			return fmt.Errorf("spec.bmc.bootMode: %q is not uefi or legacy", b.BootMode)
		}
	}
	return nil
}

// UniqueKeys claims every MAC of the machine.
func (s *MachineSpec) UniqueKeys() []string {
	keys := make([]string, 0, len(s.Interfaces))
	for _, i := range s.Interfaces {
		keys = append(keys, "mac:"+i.MAC)
	}
	return keys
}

// BootSpec is what a profile boots: a kernel with initrds and a command line, or the agent environment.
type BootSpec struct {
	Agent   bool     `json:"agent,omitempty"`
	Kernel  string   `json:"kernel,omitempty"`
	Initrds []string `json:"initrds,omitempty"`
	Cmdline string   `json:"cmdline,omitempty"`
	// UKI is the Artifact of a Unified Kernel Image that UEFI HTTP boot clients of
	// this profile get from DHCP instead of iPXE (the path for Secure Boot: the
	// firmware verifies the image itself). In a manifest: true (DefaultUKIArtifact,
	// what kiln image build --uki makes) or an artifact name.
	UKI BootUKI `json:"uki,omitempty"`
}

// DefaultUKIArtifact is the UKI a profile with spec.boot.uki: true boots.
const DefaultUKIArtifact = "kiln-agent-uki"

// BootUKI is spec.boot.uki: an artifact name; true in a manifest means
// DefaultUKIArtifact, false or absent none.
type BootUKI string

func (u *BootUKI) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true":
		*u = DefaultUKIArtifact
		return nil
	case "false", "null":
		*u = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("spec.boot.uki: want true, false or an artifact name")
	}
	*u = BootUKI(s)
	return nil
}

// ConfigSpec holds config templates rendered per machine.
type ConfigSpec struct {
	Ignition  string            `json:"ignition,omitempty"`
	CloudInit map[string]string `json:"cloudInit,omitempty"`
	Files     map[string]string `json:"files,omitempty"`
	// Public allows serving these configs over plain HTTP (by MAC) as long as they
	// refer to no secret: for Ignition fetched before any agent exists.
	Public bool `json:"public,omitempty"`
}

// ProfileSpec groups what machines of one kind boot and run.
type ProfileSpec struct {
	Description string      `json:"description,omitempty"`
	Boot        BootSpec    `json:"boot"`
	Configs     *ConfigSpec `json:"configs,omitempty"`
	Workflow    string      `json:"workflow,omitempty"`
	Secrets     []string    `json:"secrets,omitempty"`
	// EnrollPolicy are CEL expressions over facts, token claims and the request that
	// must all hold for a machine of this profile to enroll.
	EnrollPolicy []string `json:"enrollPolicy,omitempty"`
	// Enrollment is how machines of this profile enroll: EnrollAutoBound (default),
	// EnrollApprove or EnrollTPM.
	Enrollment string `json:"enrollment,omitempty"`
	// Attestation is the measured-boot policy (AttestEnforce, AttestWarn,
	// AttestOff); empty: enforce when Enrollment is tpm, else off.
	Attestation string `json:"attestation,omitempty"`
}

// AttestationPolicy is the profile's effective measured-boot policy.
func (s *ProfileSpec) AttestationPolicy() string {
	if s.Attestation != "" {
		return s.Attestation
	}
	if s.Enrollment == EnrollTPM {
		return AttestEnforce
	}
	return AttestOff
}

func (s *ProfileSpec) Validate() error {
	b := s.Boot
	if b.Agent && b.Kernel != "" {
		return fmt.Errorf("spec.boot: set either agent or kernel, not both")
	}
	if !b.Agent && b.Kernel == "" {
		return fmt.Errorf("spec.boot.kernel: required unless spec.boot.agent is true")
	}
	if b.Kernel != "" && ValidateName(b.Kernel) != nil {
		return fmt.Errorf("spec.boot.kernel: %q is not an artifact name", b.Kernel)
	}
	for i, n := range b.Initrds {
		if ValidateName(n) != nil {
			return fmt.Errorf("spec.boot.initrds[%d]: %q is not an artifact name", i, n)
		}
	}
	if b.UKI != "" && ValidateName(string(b.UKI)) != nil {
		return fmt.Errorf("spec.boot.uki: %q is not an artifact name", b.UKI)
	}
	if s.Workflow != "" && ValidateName(s.Workflow) != nil {
		return fmt.Errorf("spec.workflow: %q is not a template name", s.Workflow)
	}
	if err := validateEnrollmentMode("spec.enrollment", s.Enrollment); err != nil {
		return err
	}
	if err := validateAttestation("spec.attestation", s.Attestation); err != nil {
		return err
	}
	if c := s.Configs; c != nil {
		for _, k := range slices.Sorted(maps.Keys(c.CloudInit)) {
			switch k {
			case "meta-data", "user-data", "network-config", "vendor-data":
			default:
				return fmt.Errorf("spec.configs.cloudInit.%s: not one of meta-data, user-data, network-config, vendor-data", k)
			}
		}
	}
	for i, n := range s.Secrets {
		if ValidateName(n) != nil {
			return fmt.Errorf("spec.secrets[%d]: %q is not a secret name", i, n)
		}
	}
	return nil
}

// ArtifactSpec is a file machines download: kernel, initrd, image.
type ArtifactSpec struct {
	Source string `json:"source"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Signature is a detached minisign signature of the file (the text of its
	// .minisig): Kiln serves the artifact only if it verifies with one of the
	// server's --artifact-key keys.
	Signature string `json:"signature,omitempty"`
	Arch      string `json:"arch,omitempty"`
	// Verity makes the artifact a dm-verity image an image2slot action can write
	// (kiln machine upgrade --image).
	Verity *ArtifactVerity `json:"verity,omitempty"`
}

// ArtifactVerity is what veritysetup format made for an image, and the
// operator's signature of it.
type ArtifactVerity struct {
	// HashTree is the Artifact holding the hash device (superblock and tree).
	HashTree string `json:"hashTree"`
	// RootHash is the tree's root hash, 64 hex digits.
	RootHash string `json:"rootHash"`
	// RootHashSignature is the base64 of the DER PKCS#7 detached signature of the
	// root hash's hex text (roothash.p7s: what the kernel's dm-verity checks).
	RootHashSignature string `json:"rootHashSignature"`
}

// maxRootHashSignature bounds a signature kept in a manifest: a PKCS#7 with one
// RSA-4096 signer and no certificates is under 1 KiB.
const maxRootHashSignature = 16 << 10

func (v *ArtifactVerity) validate() error {
	if err := ValidateName(v.HashTree); err != nil {
		return fmt.Errorf("spec.verity.hashTree: %q is not an artifact name", v.HashTree)
	}
	if !sha256HexOK(v.RootHash) {
		return fmt.Errorf("spec.verity.rootHash: %q is not 64 lower-case hex digits", v.RootHash)
	}
	if len(v.RootHashSignature) > maxRootHashSignature {
		return fmt.Errorf("spec.verity.rootHashSignature: %d characters, at most %d", len(v.RootHashSignature), maxRootHashSignature)
	}
	if b, err := base64.StdEncoding.DecodeString(v.RootHashSignature); err != nil || len(b) == 0 {
		return fmt.Errorf("spec.verity.rootHashSignature: required, the base64 of the DER PKCS#7 signature of the root hash (openssl smime -sign -binary -noattr -outform der | base64 -w0)")
	}
	return nil
}

func (s *ArtifactSpec) Validate() error {
	if s.Source == "" {
		return fmt.Errorf("spec.source: required (a path or an http(s) URL)")
	}
	if strings.Contains(s.Source, "://") && !strings.HasPrefix(s.Source, "http://") && !strings.HasPrefix(s.Source, "https://") {
		return fmt.Errorf("spec.source: %q: only http, https and file paths are supported", s.Source)
	}
	if s.SHA256 != "" && !sha256HexOK(s.SHA256) {
		return fmt.Errorf("spec.sha256: %q is not 64 lower-case hex digits", s.SHA256)
	}
	if s.Size < 0 {
		return fmt.Errorf("spec.size: %d is negative", s.Size)
	}
	if s.Signature != "" {
		if _, err := minisign.ParseSignature(s.Signature); err != nil {
			return fmt.Errorf("spec.signature: %w", err)
		}
	}
	switch s.Arch {
	case "", "x86_64", "arm64":
	default:
		return fmt.Errorf("spec.arch: %q is not one of x86_64, arm64", s.Arch)
	}
	if s.Verity != nil {
		return s.Verity.validate()
	}
	return nil
}

// Action is one step of a workflow template.
type Action struct {
	Name    string         `json:"name"`
	Type    string         `json:"type"`
	Timeout string         `json:"timeout,omitempty"`
	Retries int            `json:"retries,omitempty"`
	Args    map[string]any `json:"args,omitempty"`
}

// ActionTypes are the actions built into the agent.
var ActionTypes = []string{"image2disk", "image2slot", "partition", "write-file", "exec", "reboot", "poweroff", "kexec"}

// TemplateSpec is an ordered list of actions.
type TemplateSpec struct {
	Timeout string   `json:"timeout,omitempty"`
	Actions []Action `json:"actions"`
}

func (s *TemplateSpec) Validate() error {
	if err := durationOK("spec.timeout", s.Timeout); err != nil {
		return err
	}
	if len(s.Actions) == 0 {
		return fmt.Errorf("spec.actions: at least one action is required")
	}
	names := map[string]bool{}
	for i, a := range s.Actions {
		p := fmt.Sprintf("spec.actions[%d]", i)
		if a.Name == "" {
			return fmt.Errorf("%s.name: required", p)
		}
		if names[a.Name] {
			return fmt.Errorf("%s.name: %q is used by an earlier action", p, a.Name)
		}
		names[a.Name] = true
		if !slices.Contains(ActionTypes, a.Type) {
			return fmt.Errorf("%s.type: %q is not one of %s", p, a.Type, strings.Join(ActionTypes, ", "))
		}
		if err := durationOK(p+".timeout", a.Timeout); err != nil {
			return err
		}
		if a.Retries < 0 || a.Retries > 100 {
			return fmt.Errorf("%s.retries: %d is not between 0 and 100", p, a.Retries)
		}
	}
	return nil
}

// WorkflowSpec binds a template to a machine.
type WorkflowSpec struct {
	Machine  string `json:"machine"`
	Template string `json:"template"`
}

func (s *WorkflowSpec) Validate() error {
	if ValidateName(s.Machine) != nil {
		return fmt.Errorf("spec.machine: %q is not a machine name", s.Machine)
	}
	if ValidateName(s.Template) != nil {
		return fmt.Errorf("spec.template: %q is not a template name", s.Template)
	}
	return nil
}

// JoinTokenSpec is the scope of a provisioning token. The token itself is never stored.
type JoinTokenSpec struct {
	Profile   string            `json:"profile"`
	Labels    map[string]string `json:"labels,omitempty"`
	MaxUses   int               `json:"maxUses,omitempty"`
	ExpiresAt *time.Time        `json:"expiresAt,omitempty"`
	MACs      []string          `json:"macs,omitempty"`
	CIDRs     []string          `json:"cidrs,omitempty"`
	Machine   string            `json:"machine,omitempty"`
	Revoked   bool              `json:"revoked,omitempty"`
	// Policy are CEL expressions signed into the token; all must hold to enroll.
	Policy []string `json:"policy,omitempty"`
	// Hash is the SHA-256 of the token, hex; set by Kiln when it signs a token.
	Hash string `json:"hash,omitempty"`
}

func (s *JoinTokenSpec) Validate() error {
	if ValidateName(s.Profile) != nil {
		return fmt.Errorf("spec.profile: %q is not a profile name", s.Profile)
	}
	if err := ValidateLabels(s.Labels); err != nil {
		return fmt.Errorf("spec.labels: %v", strings.TrimPrefix(err.Error(), "metadata.labels: "))
	}
	if s.MaxUses < 0 {
		return fmt.Errorf("spec.maxUses: %d is negative", s.MaxUses)
	}
	for i, m := range s.MACs {
		n, err := NormalizeMAC(m)
		if err != nil {
			return fmt.Errorf("spec.macs[%d]: %q is not a MAC address", i, m)
		}
		s.MACs[i] = n
	}
	for i, c := range s.CIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("spec.cidrs[%d]: %q is not a CIDR", i, c)
		}
	}
	if s.Machine != "" && ValidateName(s.Machine) != nil {
		return fmt.Errorf("spec.machine: %q is not a machine name", s.Machine)
	}
	if s.Hash != "" && !sha256HexOK(s.Hash) {
		return fmt.Errorf("spec.hash: not a SHA-256 hex digest")
	}
	return nil
}

// Pool is an inclusive range of addresses a subnet hands out.
type Pool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// DHCP modes.
const (
	ModeFull  = "full"
	ModeProxy = "proxy"
	ModeOff   = "off"
)

// Unknown-machine policies.
const (
	UnknownIgnore    = "ignore"
	UnknownDiscovery = "discovery"
	UnknownAllocate  = "allocate"
)

// SubnetSpec configures DHCP on one IPv4 subnet.
type SubnetSpec struct {
	CIDR       string   `json:"cidr"`
	Mode       string   `json:"mode,omitempty"`
	Pools      []Pool   `json:"pools,omitempty"`
	Router     string   `json:"router,omitempty"`
	DNS        []string `json:"dns,omitempty"`
	Domain     string   `json:"domain,omitempty"`
	LeaseTime  string   `json:"leaseTime,omitempty"`
	MTU        int      `json:"mtu,omitempty"`
	BootServer string   `json:"bootServer,omitempty"`
	Interfaces []string `json:"interfaces,omitempty"`
	// UnknownMachines is the policy for MACs no Machine claims: ignore, discovery, allocate.
	UnknownMachines string `json:"unknownMachines,omitempty"`
	// DiscoveryProfile is booted by unknown machines under the discovery policy.
	DiscoveryProfile string `json:"discoveryProfile,omitempty"`
}

func (s *SubnetSpec) Validate() error {
	pfx, err := netip.ParsePrefix(s.CIDR)
	if err != nil || !pfx.Addr().Is4() {
		return fmt.Errorf("spec.cidr: %q is not an IPv4 CIDR", s.CIDR)
	}
	if pfx.Masked() != pfx {
		return fmt.Errorf("spec.cidr: %q has host bits set (did you mean %s?)", s.CIDR, pfx.Masked())
	}
	switch s.Mode {
	case "":
		s.Mode = ModeFull
	case ModeFull, ModeProxy, ModeOff:
	default:
		return fmt.Errorf("spec.mode: %q is not one of full, proxy, off", s.Mode)
	}
	in := func(path, a string) (netip.Addr, error) {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return ip, fmt.Errorf("%s: %q is not an IPv4 address", path, a)
		}
		if !pfx.Contains(ip) {
			return ip, fmt.Errorf("%s: %s is outside %s", path, a, s.CIDR)
		}
		return ip, nil
	}
	if s.Mode == ModeFull && len(s.Pools) == 0 {
		return fmt.Errorf("spec.pools: at least one pool is required in full mode")
	}
	var prev []Pool
	for i, p := range s.Pools {
		path := fmt.Sprintf("spec.pools[%d]", i)
		a, err := in(path+".start", p.Start)
		if err != nil {
			return err
		}
		b, err := in(path+".end", p.End)
		if err != nil {
			return err
		}
		if b.Less(a) {
			return fmt.Errorf("%s: end %s is before start %s", path, p.End, p.Start)
		}
		for j, q := range prev {
			qa, qb := netip.MustParseAddr(q.Start), netip.MustParseAddr(q.End)
			if !(b.Less(qa) || qb.Less(a)) {
				return fmt.Errorf("%s: overlaps spec.pools[%d]", path, j)
			}
		}
		prev = append(prev, p)
	}
	if s.Router != "" {
		if _, err := in("spec.router", s.Router); err != nil {
			return err
		}
	}
	for i, d := range s.DNS {
		if a, err := netip.ParseAddr(d); err != nil || !a.Is4() {
			return fmt.Errorf("spec.dns[%d]: %q is not an IPv4 address", i, d)
		}
	}
	if s.Domain != "" && !ValidHostname(s.Domain) {
		return fmt.Errorf("spec.domain: %q is not a valid domain name", s.Domain)
	}
	if err := durationOK("spec.leaseTime", s.LeaseTime); err != nil {
		return err
	}
	if s.MTU != 0 && (s.MTU < 576 || s.MTU > 65535) {
		return fmt.Errorf("spec.mtu: %d is not between 576 and 65535", s.MTU)
	}
	if s.BootServer != "" {
		if a, err := netip.ParseAddr(s.BootServer); err != nil || !a.Is4() {
			return fmt.Errorf("spec.bootServer: %q is not an IPv4 address", s.BootServer)
		}
	}
	for i, n := range s.Interfaces {
		if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ \t") {
			return fmt.Errorf("spec.interfaces[%d]: %q is not an interface name", i, n)
		}
	}
	switch s.UnknownMachines {
	case "", UnknownIgnore, UnknownDiscovery, UnknownAllocate:
	default:
		return fmt.Errorf("spec.unknownMachines: %q is not one of ignore, discovery, allocate", s.UnknownMachines)
	}
	if s.UnknownMachines == UnknownDiscovery && s.DiscoveryProfile == "" {
		return fmt.Errorf("spec.discoveryProfile: required when spec.unknownMachines is discovery")
	}
	if s.DiscoveryProfile != "" && ValidateName(s.DiscoveryProfile) != nil {
		return fmt.Errorf("spec.discoveryProfile: %q is not a profile name", s.DiscoveryProfile)
	}
	return nil
}

// SecretSpec holds a secret's release rules. The value is set with `kiln secret set`
// and is never part of a manifest or an API listing.
type SecretSpec struct {
	Description string            `json:"description,omitempty"`
	Machines    []string          `json:"machines,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Attested: released only to a machine whose last TPM quote verified and
	// passed its profile's measured-boot policy, no longer than AttestedWithin
	// ago (a Go duration; default DefaultAttestedWithin).
	Attested       bool   `json:"attested,omitempty"`
	AttestedWithin string `json:"attestedWithin,omitempty"`
}

// DefaultAttestedWithin is how old a machine's last quote may be for a Secret with
// attested: true and no attestedWithin.
const DefaultAttestedWithin = time.Hour

// AttestedMaxAge is the Secret's attestedWithin, or the default.
func (s *SecretSpec) AttestedMaxAge() time.Duration {
	if d, err := time.ParseDuration(s.AttestedWithin); err == nil && d > 0 {
		return d
	}
	return DefaultAttestedWithin
}

func (s *SecretSpec) Validate() error {
	if s.AttestedWithin != "" {
		if d, err := time.ParseDuration(s.AttestedWithin); err != nil || d <= 0 {
			return fmt.Errorf("spec.attestedWithin: %q is not a positive duration (15m, 1h)", s.AttestedWithin)
		}
		if !s.Attested {
			return fmt.Errorf("spec.attestedWithin: set only with spec.attested: true")
		}
	}
	for i, m := range s.Machines {
		if ValidateName(m) != nil {
			return fmt.Errorf("spec.machines[%d]: %q is not a machine name", i, m)
		}
	}
	if err := ValidateLabels(s.Labels); err != nil {
		return fmt.Errorf("spec.labels: %v", strings.TrimPrefix(err.Error(), "metadata.labels: "))
	}
	return nil
}

// PowerJobSpec is one power request; Kiln writes these, with the job's progress and
// result in status.
type PowerJobSpec struct {
	Machine string `json:"machine"`
	Op      string `json:"op"`
	Device  string `json:"device,omitempty"`
	Actor   string `json:"actor,omitempty"`
}

func (s *PowerJobSpec) Validate() error {
	if ValidateName(s.Machine) != nil {
		return fmt.Errorf("spec.machine: %q is not a machine name", s.Machine)
	}
	if s.Op == "" {
		return fmt.Errorf("spec.op: required")
	}
	return nil
}

// Lease states.
const (
	LeaseOffered  = "offered"
	LeaseBound    = "bound"
	LeaseReleased = "released"
	LeaseDeclined = "declined"
)

// LeaseSpec is one DHCP lease; the object's name is the IP address.
type LeaseSpec struct {
	IP        string     `json:"ip"`
	MAC       string     `json:"mac"`
	ClientID  string     `json:"clientID,omitempty"`
	Subnet    string     `json:"subnet"`
	Hostname  string     `json:"hostname,omitempty"`
	State     string     `json:"state"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

func (s *LeaseSpec) Validate() error {
	if a, err := netip.ParseAddr(s.IP); err != nil || !a.Is4() {
		return fmt.Errorf("spec.ip: %q is not an IPv4 address", s.IP)
	}
	if s.MAC != "" {
		m, err := NormalizeMAC(s.MAC)
		if err != nil {
			return fmt.Errorf("spec.mac: %q is not a MAC address", s.MAC)
		}
		s.MAC = m
	}
	if ValidateName(s.Subnet) != nil {
		return fmt.Errorf("spec.subnet: %q is not a subnet name", s.Subnet)
	}
	switch s.State {
	case LeaseOffered, LeaseBound, LeaseReleased, LeaseDeclined:
	default:
		return fmt.Errorf("spec.state: %q is not one of offered, bound, released, declined", s.State)
	}
	return nil
}

// ---- small checks ---------------------------------------------------------

// NormalizeMAC parses a 48-bit MAC in any common notation and returns aa:bb:cc:dd:ee:ff.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", err
	}
	if len(hw) != 6 {
		return "", fmt.Errorf("%q is not a 48-bit MAC address", s)
	}
	return hw.String(), nil
}

// ValidHostname reports whether h is an RFC 1123 host name: dot-separated labels of
// 1-63 letters, digits and hyphens, no label starting or ending with a hyphen, at most
// 253 characters in all. It is the one check of host names in Kiln: a machine's
// interface hostname, a subnet's domain, a server certificate's DNS names.
func ValidHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func sha256HexOK(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func durationOK(path, s string) error {
	if s == "" {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("%s: %q is not a positive duration like 30s, 10m or 2h", path, s)
	}
	return nil
}
