package cli

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/enroll"
	"github.com/kilnhq/kiln/internal/resource"
)

// Enrollment requests that wait for an operator (profiles with spec.enrollment:
// approve, or hosts without a token): `kiln get enrollments` and `kiln describe
// enrollment ID` show them; these commands decide them.

func newEnrollmentCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "enrollment",
		Aliases: []string{"enrollments", "enr"},
		Short:   "Approve or deny enrollment requests that wait for an operator (list them with kiln get enrollments)",
	}
	var machine string
	approve := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending enrollment request; the host gets its certificate when it next polls",
		Long: `Approve a pending enrollment request. Check its source address and facts first
(kiln describe enrollment ID): the request proves only that the host holds the key it
asked with, nothing about which machine it is.

Without --machine, a request that came with a join token enrolls as the machine its
token bound; one without a token becomes a new machine named from its hostname (or
its first MAC). If a reported MAC belongs to a machine, the request enrolls as that
machine only when --machine names it, and never as another machine.`,
		Example: `  kiln get enrollments
  kiln describe enrollment enr-4f1c2a9b00d1
  kiln enrollment approve enr-4f1c2a9b00d1 --machine web-7`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var obj resource.Object
			if err := call(cmd, g, http.MethodPost, "/api/v1/enrollments/"+url.PathEscape(args[0])+"/approve", nil, enroll.ApproveRequest{Machine: machine}, &obj); err != nil {
				return err
			}
			spec, err := resource.Typed[resource.EnrollmentSpec](&obj)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrollment %s approved as machine %s; the host from %s collects its certificate when it next polls\n", obj.Metadata.Name, spec.Machine, spec.Source)
			return nil
		},
	}
	approve.Flags().StringVar(&machine, "machine", "", "enroll the host as this machine (needed when a reported MAC belongs to it)")

	var reason string
	deny := &cobra.Command{
		Use:   "deny ID",
		Short: "Deny a pending enrollment request; the host is told, with the reason",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var obj resource.Object
			if err := call(cmd, g, http.MethodPost, "/api/v1/enrollments/"+url.PathEscape(args[0])+"/deny", nil, enroll.DenyRequest{Reason: reason}, &obj); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrollment %s denied\n", obj.Metadata.Name)
			return nil
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why, told to the host and kept in the audit log")
	cmd.AddCommand(approve, deny)
	return cmd
}
