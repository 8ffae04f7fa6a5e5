package cli

import (
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
	"github.com/kilnhq/kiln/internal/workflow"
)

func newMachineCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "machine", Short: "Act on machines: reprovision, power, certificates"}
	var tmpl string
	reprov := &cobra.Command{
		Use:   "reprovision NAME",
		Short: "Start a new workflow on a machine (its profile's template, or --template); next netboot runs it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out api.WorkflowView
			path := "/api/v1/machines/" + url.PathEscape(args[0]) + "/reprovision"
			if err := c.do(cmdContext(cmd), http.MethodPost, path, nil, api.ReprovisionRequest{Template: tmpl}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "machine/%s reprovisioning: workflow %s (%d actions)\n", args[0], out.Name, len(out.Status.Actions))
			return nil
		},
	}
	reprov.Flags().StringVar(&tmpl, "template", "", "workflow template (default: the machine's profile's)")
	cmd.AddCommand(reprov)
	return cmd
}

// printWorkflow shows a workflow's actions for `describe machine`.
func printWorkflow(w io.Writer, wf api.WorkflowView) {
	st := wf.Status
	fmt.Fprintf(w, "Workflow:          %s (%s)", wf.Name, st.State)
	if st.Message != "" {
		fmt.Fprintf(w, ": %s", st.Message)
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
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.Name, a.Type, a.State, a.Attempts, prog, dur, a.Message)
	}
	tw.Flush()
	for _, a := range st.Actions {
		if len(a.Log) == 0 {
			continue
		}
		fmt.Fprintf(w, "  Last log lines of %s:\n", a.Name)
		for _, l := range a.Log {
			fmt.Fprintf(w, "    %s\n", l)
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
			path := "/api/v1/machines/" + url.PathEscape(args[1]) + "/events"
			var lastID int64
			first := true
			for {
				var evs api.EventList
				if err := c.do(cmdContext(cmd), http.MethodGet, path, url.Values{"limit": {strconv.Itoa(max(tail, 1000))}}, nil, &evs); err != nil {
					return err
				}
				var lines []string
				for _, e := range evs.Items {
					if e.ID <= lastID {
						continue
					}
					lastID = e.ID
					if e.Type != workflow.LogEventType {
						continue
					}
					lines = append(lines, e.Time.Local().Format("15:04:05.000")+" "+e.Message)
				}
				if first && len(lines) > tail {
					lines = lines[len(lines)-tail:]
				}
				first = false
				if len(lines) > 0 {
					fmt.Fprintln(cmd.OutOrStdout(), strings.Join(lines, "\n"))
				}
				if !follow {
					return nil
				}
				select {
				case <-cmdContext(cmd).Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().IntVar(&tail, "tail", 100, "how many recent lines to show first")
	return cmd
}
