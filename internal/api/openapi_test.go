package api_test

import (
	"encoding/json"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/resource"
)

// TestOpenAPIMatchesRoutes checks the served document against the mux both ways: every
// documented operation is routed to a handler, and every registered pattern is documented.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	code, doc := e.call("", "GET", "/api/v1/openapi.json", nil)
	if code != 200 || doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi.json: %d %v", code, doc["openapi"])
	}
	paths := doc["paths"].(map[string]any)
	documented := map[string]bool{}
	for p, item := range paths {
		for method := range item.(map[string]any) {
			m := strings.ToUpper(method)
			concrete := strings.NewReplacer("{name}", "x", "{mac}", "52:54:00:00:00:01", "{id}", "abc").Replace(p)
			req := httptest.NewRequest(m, concrete, nil)
			_, pattern := e.mux.Handler(req)
			if pattern == "" {
				t.Errorf("documented %s %s is not routed", m, p)
				continue
			}
			documented[pattern] = true
		}
	}
	// Every route pattern the mux serves must be reached by some documented path.
	var missing []string
	for _, rt := range routePatterns(e) {
		if !documented[rt] {
			missing = append(missing, rt)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.json: %v", missing)
	}
	// Every kind has a schema whose spec properties are the Go type's fields.
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, k := range resource.Kinds() {
		s, ok := schemas[k.Name].(map[string]any)
		if !ok {
			t.Errorf("no schema for %s", k.Name)
			continue
		}
		spec := s["properties"].(map[string]any)["spec"].(map[string]any)
		if len(spec["properties"].(map[string]any)) != k.SpecType.NumField() {
			t.Errorf("%s spec schema has %d properties, the type %d fields", k.Name, len(spec["properties"].(map[string]any)), k.SpecType.NumField())
		}
	}
	// A real object validates against its schema's property names.
	e.call("operator", "POST", "/api/v1/machines", machine("web-1", "52:54:00:00:00:01"))
	_, obj := e.call("viewer", "GET", "/api/v1/machines/web-1", nil)
	props := schemas["Machine"].(map[string]any)["properties"].(map[string]any)
	for k := range obj {
		if _, ok := props[k]; !ok {
			t.Errorf("served machine has field %q not in its schema", k)
		}
	}
	md := schemas["Metadata"].(map[string]any)["properties"].(map[string]any)
	for k := range obj["metadata"].(map[string]any) {
		if _, ok := md[k]; !ok {
			t.Errorf("served metadata has field %q not in its schema", k)
		}
	}
}

// routePatterns are the patterns registered on the mux.
func routePatterns(e *env) []string { return e.api.Patterns() }

func TestOpenAPIIsValidJSONDocument(t *testing.T) {
	e := newEnv(t)
	b, err := json.Marshal(e.api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"/api/v1/machines/{name}"`) || !strings.Contains(string(b), `"/api/v1/subnets"`) {
		t.Fatal("per-kind paths missing")
	}
}
