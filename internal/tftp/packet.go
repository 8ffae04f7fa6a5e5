package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// opcode is the first 16-bit field of every TFTP packet (RFC 1350 section 5,
// RFC 2347 for OACK).
type opcode uint16

const (
	opRRQ   opcode = 1
	opWRQ   opcode = 2
	opDATA  opcode = 3
	opACK   opcode = 4
	opERROR opcode = 5
	opOACK  opcode = 6
)

func (o opcode) String() string {
	switch o {
	case opRRQ:
		return "RRQ"
	case opWRQ:
		return "WRQ"
	case opDATA:
		return "DATA"
	case opACK:
		return "ACK"
	case opERROR:
		return "ERROR"
	case opOACK:
		return "OACK"
	}
	return fmt.Sprintf("opcode(%d)", uint16(o))
}

// ErrorCode is the code of a TFTP ERROR packet (RFC 1350 section 5, RFC 2347).
type ErrorCode uint16

const (
	ErrCodeNotDefined       ErrorCode = 0 // see the message
	ErrCodeFileNotFound     ErrorCode = 1
	ErrCodeAccessViolation  ErrorCode = 2
	ErrCodeDiskFull         ErrorCode = 3
	ErrCodeIllegalOperation ErrorCode = 4
	ErrCodeUnknownTID       ErrorCode = 5
	ErrCodeFileExists       ErrorCode = 6
	ErrCodeNoSuchUser       ErrorCode = 7
	ErrCodeOptionRefused    ErrorCode = 8 // RFC 2347: the client refuses the OACK
)

const (
	hdrLen = 4 // opcode + block number (DATA, ACK) or error code (ERROR)

	// defaultBlockSize is the RFC 1350 block size, used unless blksize is negotiated.
	defaultBlockSize = 512
	// minBlockSize and maxBlockSize bound the blksize option (RFC 2348 section 2).
	// 65464 is 65535 minus the IP, UDP and TFTP headers.
	minBlockSize = 8
	maxBlockSize = 65464
	// maxWindowSize bounds the windowsize option (RFC 7440 section 3).
	maxWindowSize = 65535
)

var (
	errShort      = errors.New("packet too short")
	errOpcode     = errors.New("unexpected opcode")
	errNoNUL      = errors.New("string not NUL-terminated")
	errEmptyField = errors.New("empty filename or mode")
)

// option is one name/value pair of a request or OACK. Names are compared
// case-insensitively (RFC 2347), so parsers lower-case them.
type option struct {
	name, value string
}

// request is a parsed RRQ or WRQ.
type request struct {
	op       opcode
	filename string
	mode     string // lower-cased: "octet", "netascii", ...
	options  []option
}

func peekOpcode(b []byte) (opcode, error) {
	if len(b) < 2 {
		return 0, errShort
	}
	return opcode(binary.BigEndian.Uint16(b)), nil
}

// cstring splits b at its first NUL into the string before it and the rest.
func cstring(b []byte) (s string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", b, false
	}
	return string(b[:i]), b[i+1:], true
}

// parseRequest parses an RRQ or WRQ:
//
//	| opcode | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
//
// Filename and mode must be present and NUL-terminated. The option list is read
// leniently, because some PXE ROMs pad requests with extra NUL bytes or truncate
// them: empty option names are skipped and an unterminated trailing option is
// dropped. The first occurrence of a repeated option wins.
func parseRequest(b []byte) (request, error) {
	op, err := peekOpcode(b)
	if err != nil {
		return request{}, err
	}
	if op != opRRQ && op != opWRQ {
		return request{}, fmt.Errorf("%w %v", errOpcode, op)
	}
	req := request{op: op}
	rest := b[2:]
	var ok bool
	if req.filename, rest, ok = cstring(rest); !ok {
		return request{}, errNoNUL
	}
	var mode string
	if mode, rest, ok = cstring(rest); !ok {
		return request{}, errNoNUL
	}
	if req.filename == "" || mode == "" {
		return request{}, errEmptyField
	}
	req.mode = strings.ToLower(mode)
	seen := map[string]bool{}
	for len(rest) > 0 {
		var name, value string
		if name, rest, ok = cstring(rest); !ok {
			break
		}
		if name == "" {
			continue // NUL padding
		}
		if value, rest, ok = cstring(rest); !ok {
			break
		}
		name = strings.ToLower(name)
		if seen[name] {
			continue
		}
		seen[name] = true
		req.options = append(req.options, option{name, value})
	}
	return req, nil
}

// encodeRequest is the inverse of parseRequest (used by tests and the fuzzer).
func encodeRequest(op opcode, filename, mode string, opts []option) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(op))
	b = append(append(b, filename...), 0)
	b = append(append(b, mode...), 0)
	for _, o := range opts {
		b = append(append(b, o.name...), 0)
		b = append(append(b, o.value...), 0)
	}
	return b
}

// encodeOACK builds an OACK (RFC 2347): | 6 | opt1 | 0 | value1 | 0 | ... |
func encodeOACK(opts []option) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(opOACK))
	for _, o := range opts {
		b = append(append(b, o.name...), 0)
		b = append(append(b, o.value...), 0)
	}
	return b
}

// parseOACK parses an OACK strictly: every name and value NUL-terminated.
func parseOACK(b []byte) ([]option, error) {
	op, err := peekOpcode(b)
	if err != nil {
		return nil, err
	}
	if op != opOACK {
		return nil, fmt.Errorf("%w %v", errOpcode, op)
	}
	var opts []option
	rest := b[2:]
	for len(rest) > 0 {
		var name, value string
		var ok bool
		if name, rest, ok = cstring(rest); !ok {
			return nil, errNoNUL
		}
		if value, rest, ok = cstring(rest); !ok {
			return nil, errNoNUL
		}
		opts = append(opts, option{strings.ToLower(name), value})
	}
	return opts, nil
}

// putDataHeader writes the DATA header into b[:4].
func putDataHeader(b []byte, block uint16) {
	binary.BigEndian.PutUint16(b, uint16(opDATA))
	binary.BigEndian.PutUint16(b[2:], block)
}

// parseData parses | 3 | block | data (0..blksize bytes) |. payload aliases b.
func parseData(b []byte) (block uint16, payload []byte, err error) {
	if len(b) < hdrLen {
		return 0, nil, errShort
	}
	if op := opcode(binary.BigEndian.Uint16(b)); op != opDATA {
		return 0, nil, fmt.Errorf("%w %v", errOpcode, op)
	}
	return binary.BigEndian.Uint16(b[2:]), b[hdrLen:], nil
}

func encodeACK(block uint16) []byte {
	b := make([]byte, hdrLen)
	binary.BigEndian.PutUint16(b, uint16(opACK))
	binary.BigEndian.PutUint16(b[2:], block)
	return b
}

// parseACK parses | 4 | block |. Trailing bytes are tolerated: some embedded
// clients send ACKs padded to a minimum frame size.
func parseACK(b []byte) (uint16, error) {
	if len(b) < hdrLen {
		return 0, errShort
	}
	if op := opcode(binary.BigEndian.Uint16(b)); op != opACK {
		return 0, fmt.Errorf("%w %v", errOpcode, op)
	}
	return binary.BigEndian.Uint16(b[2:]), nil
}

// encodeError builds | 5 | code | message | 0 |. A NUL inside msg would end the
// message early on the wire, so it is cut there.
func encodeError(code ErrorCode, msg string) []byte {
	if i := strings.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	b := make([]byte, hdrLen, hdrLen+len(msg)+1)
	binary.BigEndian.PutUint16(b, uint16(opERROR))
	binary.BigEndian.PutUint16(b[2:], uint16(code))
	return append(append(b, msg...), 0)
}

// parseError parses an ERROR packet. A missing terminating NUL is tolerated:
// the message is informational only.
func parseError(b []byte) (ErrorCode, string, error) {
	if len(b) < hdrLen {
		return 0, "", errShort
	}
	if op := opcode(binary.BigEndian.Uint16(b)); op != opERROR {
		return 0, "", fmt.Errorf("%w %v", errOpcode, op)
	}
	msg := b[hdrLen:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return ErrorCode(binary.BigEndian.Uint16(b[2:])), string(msg), nil
}
