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

// `kiln attestation accept`: a new measured-boot baseline for a profile of TPM
// enrollment (spec.attestation enforce or warn).
func newAttestationCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attestation",
		Short: "Accept a new measured-boot baseline for TPM-attested machines",
	}
	var profile string
	accept := &cobra.Command{
		Use:   "accept [MACHINE]",
		Short: "Make a machine's last quoted boot its profile's baseline, or (--profile) learn from the profile's next boot",
		Long: `Accept a new measured-boot baseline (admin). With MACHINE, the boot the machine
last quoted (kiln describe machine MACHINE shows what changed) becomes the baseline
of its profile, and the machine is attested again. With --profile, the profile's
baseline is forgotten: the next attested boot of one of its machines sets it.`,
		Example: `  kiln describe machine web-7
  kiln attestation accept web-7
  kiln attestation accept --profile workers`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := enroll.AcceptRequest{Profile: profile}
			if len(args) == 1 {
				req.Machine = args[0]
			}
			var obj resource.Object
			if err := call(cmd, g, http.MethodPost, "/api/v1/attestation/accept", nil, req, &obj); err != nil {
				return err
			}
			if req.Machine != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "profile %s: measured-boot baseline set to machine %s's last boot\n", obj.Metadata.Name, req.Machine)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "profile %s: baseline forgotten; the next attested boot sets it\n", obj.Metadata.Name)
			}
			return nil
		},
	}
	accept.Flags().StringVar(&profile, "profile", "", "forget this profile's baseline instead: its next attested boot sets it")
	cmd.AddCommand(accept)
	return cmd
}
