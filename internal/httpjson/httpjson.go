// Package httpjson writes the JSON responses of Kiln's HTTP endpoints (the
// operator API, enrollment, the agent API, secrets), so that all of them answer
// alike: one error shape, no MIME sniffing, nothing cached (the bodies carry
// operator or per-machine data).
package httpjson

import (
	"encoding/json"
	"net/http"
)

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

// Write sends v as JSON with the status code.
func Write(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Error sends an ErrorResponse.
func Error(w http.ResponseWriter, code int, msg string) {
	Write(w, code, ErrorResponse{Error: msg, Code: code})
}

// List is items for a list response: an empty list for nil, so that clients read
// [] and never null.
func List[T any](items []T) []T {
	if items == nil {
		return []T{}
	}
	return items
}
