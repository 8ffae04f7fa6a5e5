package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Client input is bounded: decoded strictly, and echoed in refusals only truncated.

// strictJSON decodes exactly one JSON object with no unknown fields.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(truncate(err.Error(), 120))
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// truncate cuts s to n bytes (marking the cut), for client-supplied text in refusals and logs.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
