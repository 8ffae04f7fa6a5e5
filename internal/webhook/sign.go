package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// SignatureHeader is "sha256=" and the hex HMAC-SHA256, under the webhook's
	// Secret, of the timestamp header's value, ".", and the body.
	SignatureHeader = "X-Kiln-Signature"
	// TimestampHeader is the Unix time of the attempt: a receiver refuses an old
	// one, so that a captured delivery cannot be replayed later.
	TimestampHeader = "X-Kiln-Timestamp"
	EventIDHeader   = "X-Kiln-Event-ID"
	WebhookHeader   = "X-Kiln-Webhook"
	AttemptHeader   = "X-Kiln-Attempt"
)

// DefaultTolerance is how old a timestamp Verify accepts.
const DefaultTolerance = 5 * time.Minute

// Sign returns the signature header's value for body sent at ts.
func Sign(key []byte, ts time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return timestamp, "sha256=" + hex.EncodeToString(m.Sum(nil))
}

var (
	// ErrBadSignature: the signature does not match the body and timestamp.
	ErrBadSignature = errors.New("webhook signature does not match")
	// ErrStale: the timestamp is outside the tolerance (a replay, or a clock off).
	ErrStale = errors.New("webhook timestamp is too old or in the future")
)

// Verify checks a delivery as a receiver should: the signature over timestamp and
// body, in constant time, and the timestamp within tolerance of now.
func Verify(key []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %q is not a Unix time", TimestampHeader, timestamp)
	}
	hexSig, ok := strings.CutPrefix(signature, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return fmt.Errorf("%s: not sha256=<hex>", SignatureHeader)
	}
	_, want := Sign(key, time.Unix(sec, 0), body)
	wantRaw, _ := hex.DecodeString(strings.TrimPrefix(want, "sha256="))
	if !hmac.Equal(got, wantRaw) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
