// Package tftp is Kiln's read-only TFTP server, the first stage of network boot:
// PXE firmware fetches iPXE (or another loader) over TFTP before anything else.
//
// It implements RFC 1350 read requests in octet and netascii mode, option
// negotiation (RFC 2347) with blksize (RFC 2348), tsize and timeout (RFC 2349)
// and windowsize (RFC 7440). Write requests are always refused.
//
// Every transfer runs on its own ephemeral UDP socket (a new transfer ID, RFC
// 1350 section 4) bound to the address the request was sent to, so replies leave
// from the address the client talked to even when the server listens on a
// wildcard address of a multi-homed host.
//
// What a requested name means is up to a [Handler]; [DirHandler] serves files
// from one directory tree, confined with [os.Root], plus an optional alias map.
package tftp
