package agentwire

// Facts (POST FactsPath, and EnrollRequest.Facts) are a JSON object: the agent's
// MachineFacts keys (arch, cpus, memory_mb, dmi, disks, nics, ...). Disk and NIC are
// the typed form of its disks and nics entries.

// Disk is a block device as facts report it.
type Disk struct {
	Name        string `json:"name"`
	Path        string `json:"path"`
	SizeBytes   int64  `json:"size_bytes"`
	Model       string `json:"model,omitempty"`
	Serial      string `json:"serial,omitempty"`
	Rotational  bool   `json:"rotational"`
	Removable   bool   `json:"removable,omitempty"`
	SectorBytes int64  `json:"logical_sector_bytes,omitempty"`
}

// NIC is a network interface as facts report it.
type NIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	Driver    string `json:"driver,omitempty"`
	Link      bool   `json:"link"`
	State     string `json:"operstate,omitempty"`
	SpeedMbps int64  `json:"speed_mbps,omitempty"`
	MTU       int64  `json:"mtu,omitempty"`
	Boot      bool   `json:"boot,omitempty"` // the NIC the machine netbooted from (BOOTIF)
}
