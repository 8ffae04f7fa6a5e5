// Package enroll is Kiln's machine identity: a built-in certificate authority, signed
// join tokens, enrollment (POST /enroll: token + CSR + facts -> a short-lived machine
// certificate), the agent API's mTLS authentication with revocation and a CRL, and
// boot by client certificate.
//
// # Certificate authority
//
// On first start Kiln creates an ECDSA P-256 CA (or imports an operator's intermediate
// CA: Config.ImportCACert/ImportCAKey) and an ed25519 key that signs join tokens. Both
// private keys are sealed with AES-256-GCM under a key-encryption key (KEK) and kept
// in the store, as one object of an internal kind that the operator API does not
// expose. The KEK is a file (default <data-dir>/kek.key, mode 0600, created on first
// start; a file others can read is refused) or is given directly (KILN_KEK).
//
// Why the store and not files: replicas on one PostgreSQL must share the CA and the
// token key. In the store they do with no copying — the first replica to start
// creates them inside a write transaction, the others read them — and a database
// backup carries them, still encrypted. What every replica needs is the same KEK
// (copy kek.key, or set KILN_KEK): a replica with another KEK refuses to start and
// says so. A public copy of the CA certificate is written to <data-dir>/ca.crt.
//
// The server's own TLS certificate (API, boot HTTPS and agent API on one port) is
// issued from the CA at start, with configurable SANs, and reissued in place at two
// thirds of its lifetime; its key stays in memory. The CA certificate and its SHA-256
// fingerprint are published at GET /ca.crt and by `kiln ca show` for agents to pin.
//
// # Join tokens
//
// A token is a compact JWT signed with EdDSA: {"alg":"EdDSA","typ":"JWT"}, claims jti,
// iss (the server URL), iat, nbf, exp and scope (profile, labels, MACs, CIDRs,
// machine, CEL policy). The parser accepts nothing else (jwt.go). The store keeps a
// JoinToken object named by the id with the scope, the SHA-256 of the token and, in
// its status, the use count; never the token. Signed claims define the scope; the
// stored object can only narrow it (revoked, expiresAt, maxUses). Revocation is
// one-way: RevokeToken also records it in the status, and the inventory keeps a
// revoked token's spec.revoked true when a manifest (an old one re-applied) clears it.
//
// Per-boot tokens (MintBootToken, BootCmdline, boottoken.go) travel in the iPXE
// script, which anyone on the provisioning network can ask for, so one is minted only
// for a machine an operator put into provisioning (its running workflow; state new
// only with Config.BootTokensForNew), once per reprovision, and served only to a
// request from the address Kiln leased to the machine's MAC (an active bound Lease)
// or its reserved interface address. The token's claims carry that address
// (scope.addr) and enrollment with it is accepted only from there. A second script
// request for the same boot gets the same token (its claims are kept in the
// JoinToken's status and signed again: Ed25519 is deterministic), so asking again
// never supersedes the machine's token; a new reprovision does. A request from
// another address gets a script without a token, and an EnrollAlert event and a
// boot-token-alert audit entry (one a minute per machine and address, with a count).
// Each machine has one such object ("boot-<machine>"). A per-boot token presented
// from another address, or after it was used, is refused with an EnrollAlert event
// and an enroll-alert audit entry, and nothing is consumed. README#threat-model says
// what this defends against and what not.
//
// # Enrollment
//
// POST /enroll (HTTPS only) checks, in order: the token's form and signature, its
// nbf/exp, its CIDRs (and a per-boot token's address) against the request's source
// address and its MACs against the
// reported facts, the token's CEL policy, the profile's (spec.enrollPolicy), then the
// CSR (and its channel binding). Then, in one write transaction (serialized, across
// replicas too): the profile's policy is still the one checked (it is cached between
// enrollments; a changed one is read and checked again, and a refusal is never made
// on a cached one), the stored token (hash, revocation, expiry, remaining uses), the
// machine binding, the CSR's names against the assigned name, the replay record, and
// the writes: machine created or updated, use counted, audit entry, event. N uses
// means N. Enrollments arriving together share the transaction (batch.go).
//
// The machine is the one the token names (created if missing); else, for a token
// scoped to MACs, the one owning a reported MAC inside the scope, and the enrollment
// is refused if a reported MAC outside it belongs to another machine; else the one
// owning the reported MACs; else a new machine with the token's profile and labels,
// named after the reported hostname if that is free, else m-<MAC>, else m-<key
// hash>. On every path an existing machine must have the token's profile (or none),
// and one holding a valid certificate is enrolled again only within an operator's
// reprovision (state provisioning, certificate older than the running workflow):
// otherwise it renews with its certificate (binding.go).
//
// CSR rule: Kiln takes only the public key (ECDSA P-256/P-384, Ed25519, RSA 2048-8192)
// and assigns the names itself. A CSR says nothing about names (empty subject, no
// SANs: the agent's way, since a generic token cannot tell it its name) or exactly the
// assigned one (CN = name, at most one DNS SAN = name). Other subject attributes,
// other SANs, requested extensions, request attributes (a challengePassword other
// than a channel binding included): refused. The certificate has CN and DNS SAN =
// the machine's name, client authentication only, lifetime Config.CertTTL (24h).
//
// One handshake per enrollment (connbind.go): a CSR may carry its TLS connection's
// channel binding (RFC 9266 tls-exporter, in challengePassword, as EST does); or the
// client may present any certificate of the CSR's key in the handshake. Either proves
// that the client on this connection holds the key, so once the key is certified the
// connection speaks for the machine, checked on every request as a presented
// certificate is. A CSR bound to another connection is refused.
//
// Every public key enrolls once (an internal EnrollKey record, kept for
// Config.ReplayWindow): replaying an enrollment request is refused even with a
// multi-use token.
//
// Every refusal (enrollment, agent API, boot by certificate) is answered with a reason,
// written to the audit log (actor "enroll", action "<what>-refused", the token's id
// but never the token) and, for a known machine, to its timeline; nothing is issued
// or consumed.
//
// # Agent API
//
// The HTTPS listener requests client certificates without requiring them (one port
// for enrollment and mTLS), and issues no session tickets (none of its clients
// resumes). AgentAuth admits a request on a connection an enrollment bound (above),
// or with a certificate whose SHA-256 is the machine's current
// status.certFingerprint: revocation clears it, renewal and re-enrollment replace it,
// so an old certificate (or binding) stops working at once; this is checked on every
// request. Refusals explain themselves (another CA, expired,
// revoked or superseded). RefuseOtherMachine / OwnMachineOnly answer 403 with an
// audit entry to a machine asking for another's data. POST /agent/v1/renew renews
// (agents do it at two thirds of the lifetime, with a new key); GET /crl lists
// revoked certificates until they expire.
//
// # Boot by client certificate
//
// For iPXE builds with an embedded client certificate (ExportBootCert, `kiln machine
// cert NAME --out DIR`), GET /ipxe/by-cert serves the machine's script, chosen by the
// certificate's fingerprint.
//
// # Files
//
// One concept a file. The CA: authority.go (stored and sealed, seal.go), caimport.go,
// signing.go (machine certificates, CRL; fastcert.go the fast path), servercert.go.
// Join tokens: jwt.go (format), tokens.go (create, list, revoke, per-boot). An
// enrollment, in order: handler.go (POST /enroll; messages.go its bodies), pipeline.go
// (checks before the store: token, policies, CSR in csr.go, channel binding in
// connbind.go), batch.go and batchreads.go (the shared write transaction), commit.go
// (the checks in it), binding.go (which machine), issue.go (certificate and writes);
// refusal.go (refusals and their record), stored.go (internal kinds, statuses),
// facts.go. The agent API: agentauth.go (mTLS authentication), agentapi.go (self,
// renew), revoke.go (revocation, CRL). bootcert.go: boot by certificate. operator.go:
// the operator API's routes and housekeeping; server.go: Config, New, routes.
package enroll
