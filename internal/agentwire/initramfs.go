package agentwire

// Paths inside the agent's initramfs: the image builder (internal/image) puts files
// there and the agent's init relies on them.
const (
	// KilnPath is the static kiln binary.
	KilnPath = "bin/kiln"
	// BusyboxPath is busybox; init installs its applets as symlinks in /bin.
	BusyboxPath = "bin/busybox"
	// ModuleListPath lists the module files to load, one path a line, in load order.
	ModuleListPath = "etc/kiln/modules"
	// DHCPScriptPath is the udhcpc script that configures the boot NIC.
	DHCPScriptPath = "etc/kiln/udhcpc.script"
)
