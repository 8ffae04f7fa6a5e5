// Package resource defines Kiln's inventory objects (Machine, Profile, Subnet ...),
// their manifest form and their validation. It knows nothing of storage or HTTP.
package resource

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// APIVersion is written on every object Kiln returns and accepted (or omitted) on input.
const APIVersion = "kiln.dev/v1"

// Metadata is the part of every object that is not kind-specific.
type Metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are free-form notes for tools (Argo CD, Flux, kubectl): stored and
	// returned as given, never interpreted by Kiln and never used to select objects.
	Annotations     map[string]string `json:"annotations,omitempty"`
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	CreatedAt       *time.Time        `json:"createdAt,omitempty"`
	UpdatedAt       *time.Time        `json:"updatedAt,omitempty"`
}

// Object is one inventory object as stored and as sent over the API. Spec is owned by
// the operator (manifests); Status is owned by Kiln (facts, state) and ignored on apply.
type Object struct {
	APIVersion string          `json:"apiVersion,omitempty"`
	Kind       string          `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	Status     json.RawMessage `json:"status,omitempty"`
}

// Key identifies an object.
func (o *Object) Key() string { return o.Kind + "/" + o.Metadata.Name }

// Clone returns a deep copy.
func (o *Object) Clone() *Object {
	c := *o
	c.Metadata.Labels = maps.Clone(o.Metadata.Labels)
	c.Metadata.Annotations = maps.Clone(o.Metadata.Annotations)
	c.Spec = append(json.RawMessage(nil), o.Spec...)
	c.Status = append(json.RawMessage(nil), o.Status...)
	return &c
}

// nameRE is a DNS-1123 subdomain-ish name: what a hostname or a file name can carry.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// labelKeyRE allows an optional DNS prefix ("kiln.dev/rack") like Kubernetes label keys.
var labelKeyRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
var labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)

// ValidateName checks an object name.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("metadata.name: required")
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("metadata.name: %q is not a valid name (lower-case letters, digits, '-' and '.', at most 253)", name)
	}
	return nil
}

// ValidateLabels checks label keys and values.
func ValidateLabels(labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("metadata.labels: %q is not a valid label key", k)
		}
		if !labelValueRE.MatchString(labels[k]) {
			return fmt.Errorf("metadata.labels.%s: %q is not a valid label value", k, labels[k])
		}
	}
	return nil
}

// MaxAnnotationsSize bounds the total size of an object's annotations (keys and
// values), as Kubernetes does: a tool's last-applied copy of a manifest fits, a
// disk image does not.
const MaxAnnotationsSize = 256 << 10

// ValidateAnnotations checks annotation keys (the syntax of label keys: an optional
// DNS prefix and a name of at most 63 characters) and their total size. Values are
// free text.
func ValidateAnnotations(annotations map[string]string) error {
	size := 0
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("metadata.annotations: %q is not a valid annotation key (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')", k)
		}
		size += len(k) + len(annotations[k])
	}
	if size > MaxAnnotationsSize {
		return fmt.Errorf("metadata.annotations: %d bytes in total, more than the limit of %d", size, MaxAnnotationsSize)
	}
	return nil
}

// ObjectError names the object a validation error is about:
// machine "web-1": spec.interfaces[0].mac: "zz:01" is not a MAC address.
type ObjectError struct {
	Kind, Name string
	Err        error
}

func (e *ObjectError) Error() string {
	name := e.Name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Sprintf("%s %q: %v", strings.ToLower(e.Kind), name, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }
