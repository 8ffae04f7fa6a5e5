package cli

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/safetext"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/watch"
	"github.com/kilnhq/kiln/internal/workflow"
)

func newMachineCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "machine", Short: "Act on machines: reprovision, upgrade, cancel, power, certificates"}
	var tmpl string
	var noPower bool
	reprov := &cobra.Command{
		Use:               "reprovision NAME",
		Short:             "Start a new workflow on a machine (its profile's template, or --template); next netboot runs it",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNamesOf(g, "Machine", 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.WorkflowView
			path := "/api/v1/machines/" + url.PathEscape(args[0]) + "/reprovision"
			if err := call(cmd, g, http.MethodPost, path, nil, api.ReprovisionRequest{Template: tmpl, NoPower: noPower}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s reprovisioning: workflow %s (%d actions)\n", args[0], out.Name, len(out.Status.Actions))
			for _, w := range out.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning:", w)
			}
			if out.PowerJob != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "power job %s: next boot PXE once, then power cycle\n", out.PowerJob)
			} else if !noPower {
				fmt.Fprintln(cmd.OutOrStdout(), "no BMC: reboot the machine to start it")
			}
			return nil
		},
	}
	reprov.Flags().StringVar(&tmpl, "template", "", "workflow template (default: the machine's profile's)")
	reprov.Flags().BoolVar(&noPower, "no-power", false, "do not set next boot to PXE and power-cycle through the BMC")
	var image string
	upgrade := &cobra.Command{
		Use:   "upgrade NAME --image ARTIFACT",
		Short: "Write a dm-verity image to the machine's inactive A/B slot and boot it; systemd-boot falls back to the running slot if it does not come up",
		Long: `Starts a workflow with the image2slot and reboot actions of the machine's template
(its profile's, or --template), writing ARTIFACT (an Artifact with spec.verity) to the
slot the machine is not running. Like reprovision, the machine netboots Kiln's agent
to run it: next boot PXE once and a power cycle through the BMC, unless --no-power.`,
		Example:           "  kiln machine upgrade web-1 --image os-2026.12.2",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNamesOf(g, "Machine", 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return fmt.Errorf("--image: required (an Artifact with spec.verity)")
			}
			var out api.WorkflowView
			path := "/api/v1/machines/" + url.PathEscape(args[0]) + "/upgrade"
			if err := call(cmd, g, http.MethodPost, path, nil, api.UpgradeRequest{Image: image, Template: tmpl, NoPower: noPower}, &out); err != nil {
				return err
			}
			slot := ""
			for _, a := range out.Status.Actions {
				if a.Type == "image2slot" {
					slot, _ = a.Args["slot"].(string)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s upgrading to %s in slot %s: workflow %s (%d actions)\n", args[0], image, slot, out.Name, len(out.Status.Actions))
			for _, w := range out.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning:", w)
			}
			if out.PowerJob != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "power job %s: next boot PXE once, then power cycle\n", out.PowerJob)
			} else if !noPower {
				fmt.Fprintln(cmd.OutOrStdout(), "no BMC: reboot the machine to start it")
			}
			return nil
		},
	}
	upgrade.Flags().StringVar(&image, "image", "", "the Artifact (with spec.verity) to write")
	upgrade.Flags().StringVar(&tmpl, "template", "", "workflow template whose image2slot and reboot actions run (default: the machine's profile's)")
	upgrade.Flags().BoolVar(&noPower, "no-power", false, "do not set next boot to PXE and power-cycle through the BMC")
	cancel := &cobra.Command{
		Use:               "cancel NAME",
		Short:             "End a machine's pending or running workflow; the machine goes back to its state before it (audited)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNamesOf(g, "Machine", 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.CancelResponse
			if err := call(cmd, g, http.MethodPost, "/api/v1/machines/"+url.PathEscape(args[0])+"/cancel", nil, nil, &out); err != nil {
				k, _ := resource.LookupKind("Machine")
				return withNearNames(cmd, g, k, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s: workflow %s cancelled; state %s\n", args[0], out.Workflow, out.State)
			return nil
		},
	}
	cmd.AddCommand(reprov, upgrade, cancel, newPowerCmd(g))
	cmd.AddCommand(enrollMachineCmds(g)...)
	return cmd
}

// powerJob is the part of a power job the CLI shows.
type powerJob struct {
	ID         string `json:"id"`
	Machine    string `json:"machine"`
	Op         string `json:"op"`
	State      string `json:"state"`
	Attempts   int    `json:"attempts"`
	PowerState string `json:"powerState"`
	Error      string `json:"error"`
}

func newPowerCmd(g *globalFlags) *cobra.Command {
	var selector, device string
	var wait bool
	cmd := &cobra.Command{
		Use:               "power on|off|cycle|soft-off|status|set-boot NAME | -l SELECTOR",
		Short:             "Power machines through their BMCs (Redfish, IPMI, QEMU)",
		Example:           "  kiln machine power status web-1\n  kiln machine power cycle -l rack=r1\n  kiln machine power set-boot web-1 --device pxe",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completePower(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 2) == (selector != "") {
				return fmt.Errorf("give a machine NAME or -l SELECTOR (one of them)")
			}
			path := "/api/v1/power"
			if len(args) == 2 {
				path = "/api/v1/machines/" + url.PathEscape(args[1]) + "/power"
			}
			var out struct {
				Jobs []powerJob `json:"jobs"`
			}
			body := map[string]any{"op": args[0], "device": device, "selector": selector, "wait": wait}
			if err := call(cmd, g, http.MethodPost, path, nil, body, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tJOB\tOP\tSTATE\tPOWER\tERROR")
			failed := 0
			for _, j := range out.Jobs {
				if j.State == "failed" {
					failed++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Machine, j.ID, j.Op, j.State, cmp.Or(j.PowerState, "-"), j.Error)
			}
			tw.Flush()
			if failed > 0 {
				return fmt.Errorf("%d of %d power jobs failed", failed, len(out.Jobs))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "every machine these labels select")
	cmd.Flags().StringVar(&device, "device", "", "for set-boot: pxe, disk or cdrom (default pxe)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the jobs to finish (status always waits)")
	return cmd
}

// printWorkflow shows a workflow's actions for `describe machine`.
func printWorkflow(w io.Writer, wf api.WorkflowView) {
	st := wf.Status
	fmt.Fprintf(w, "Workflow:          %s (%s)", wf.Name, workflowState(st.State, st.Message))
	if st.Message != "" {
		fmt.Fprintf(w, ": %s", safetext.Escape(st.Message))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "  ACTION\tTYPE\tSTATE\tATTEMPTS\tPROGRESS\tDURATION\tMESSAGE")
	for _, a := range st.Actions {
		prog, dur := "-", "-"
		if p := a.Progress; p != nil {
			prog = humanBytes(p.Bytes)
			if p.Total > 0 {
				prog = fmt.Sprintf("%s/%s %.0f%%", humanBytes(p.Bytes), humanBytes(p.Total), 100*float64(p.Bytes)/float64(p.Total))
			}
		}
		if a.StartedAt != nil {
			end := time.Now()
			if a.FinishedAt != nil {
				end = *a.FinishedAt
			}
			dur = formatStep(end.Sub(*a.StartedAt))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.Name, a.Type, a.State, a.Attempts, prog, dur, safetext.Escape(a.Message))
	}
	tw.Flush()
	for _, a := range st.Actions {
		if len(a.Log) == 0 {
			continue
		}
		fmt.Fprintf(w, "  Last log lines of %s:\n", a.Name)
		for _, l := range a.Log {
			fmt.Fprintf(w, "    %s\n", safetext.Escape(l))
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newLogsCmd(g *globalFlags) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs machine NAME",
		Short: "Show a machine's agent log lines (-f follows them)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if k, err := kindArg(args[0]); err != nil || k.Name != "Machine" {
				return fmt.Errorf("logs: only machines have logs (kiln logs machine NAME)")
			}
			c, err := newClient(g)
			if err != nil {
				return err
			}
			ctx := cmdContext(cmd)
			path := "/api/v1/machines/" + url.PathEscape(args[1]) + "/events"
			var lastID int64
			first := true
			show := func(evs []store.Event) {
				var lines []string
				for _, e := range evs {
					if e.ID <= lastID {
						continue
					}
					lastID = e.ID
					if e.Type != workflow.LogEventType {
						continue
					}
					lines = append(lines, e.Time.Local().Format("15:04:05.000")+" "+safetext.Escape(e.Message))
				}
				if first && len(lines) > tail {
					lines = lines[len(lines)-tail:]
				}
				first = false
				if len(lines) > 0 {
					fmt.Fprintln(cmd.OutOrStdout(), strings.Join(lines, "\n"))
				}
			}
			for {
				var evs api.EventList
				if err := c.do(ctx, http.MethodGet, path, url.Values{"limit": {strconv.Itoa(max(tail, 1000))}}, nil, &evs); err != nil {
					return err
				}
				show(evs.Items)
				if !follow {
					return nil
				}
				// Follow the stream from what the list showed (or, if the machine had
				// nothing newer, from the log's head before the list was read).
				head, _ := strconv.ParseInt(evs.ResourceVersion, 10, 64)
				lastID = max(lastID, head)
				q := url.Values{"machine": {args[1]}, "type": {workflow.LogEventType}}
				err := c.follow(ctx, "/api/v1/events", q, strconv.FormatInt(lastID, 10), func(m watch.Received) error {
					var e store.Event
					if err := json.Unmarshal([]byte(m.Data), &e); err != nil {
						return fmt.Errorf("decode an event of the stream: %w", err)
					}
					show([]store.Event{e})
					return nil
				})
				if !errors.Is(err, errStreamGone) {
					return err
				}
				// The server lost the history after lastID: list again, then follow.
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().IntVar(&tail, "tail", 100, "how many recent lines to show first")
	return cmd
}
