// Package power switches machines on and off through their baseboard management
// controllers (BMCs) and picks the device they boot from next.
//
// One small interface, [Driver], has three implementations chosen by a Machine's
// spec.bmc.driver:
//
//   - redfish: DMTF Redfish over HTTPS, written here on net/http. It discovers the
//     ComputerSystem from the service root, logs in with a session (basic auth where
//     a BMC offers nothing else), resets only with the ResetTypes the BMC lists as
//     allowable, sets a one-time boot override after checking the BMC's
//     AllowableValues, waits for PowerState to reach the requested state, and
//     inserts or ejects a virtual CD where the BMC offers one ([VirtualMedia]).
//   - ipmi: IPMI v2.0 over LAN (RMCP+, "lanplus") through Debian's ipmitool; the
//     password travels in the IPMI_PASSWORD environment variable of the child
//     process, never on its command line.
//   - qemu: a lab VM's QMP socket, so that development fleets of VMs are driven
//     exactly like servers (see [New] for how power states map onto QEMU).
//
// BMC credentials come from a Secret named by spec.bmc.credentialsSecret through the
// [Credentials] seam. No password ever appears in an error, a log line, a job or an
// event: errors built here never format it, and every driver error is passed
// through a redaction step as a second line of defence.
//
// [Runner] turns power requests into persisted [Job]s: it serializes requests to one
// BMC, runs fleet-wide requests with bounded parallelism, retries with backoff inside
// a per-job timeout, and records each job as machine events and audit entries through
// the [JobStore] and [Recorder] seams.
package power
