// Command initprobe stands in for the kiln binary in the agent image's QEMU test
// (internal/image): as `agent init` it is PID 1 through agent.RunInit, exactly as
// kiln is, and its "agent" posts the machine's facts to kiln.probe= from the kernel
// command line, then powers the VM off.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/agent"
)

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "agent" && os.Args[2] == "init" {
		err := agent.RunInit(agent.InitOptions{AgentArgs: []string{"probe"}})
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	b, _ := os.ReadFile("/proc/cmdline")
	url := agent.ParseCmdline(string(b))["kiln.probe"]
	facts, _ := json.Marshal(agent.MachineFacts(""))
	for i := 0; i < 20; i++ {
		resp, err := http.Post(url, "application/json", bytes.NewReader(facts))
		if err == nil {
			resp.Body.Close()
			break
		}
		fmt.Fprintln(os.Stderr, "probe:", err)
		time.Sleep(time.Second)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
