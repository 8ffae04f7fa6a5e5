package api

import (
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/resource"
)

// OpenAPI builds the OpenAPI 3 document from the route table and the Go types, so it
// cannot drift from what is served; openapi_test.go checks the mux against it.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range s.routes {
		if rt.kindPath {
			for _, k := range resource.Kinds() {
				p := strings.Replace(rt.path, "{kind}", k.Plural, 1)
				addOp(paths, p, rt, k)
			}
			continue
		}
		addOp(paths, rt.path, rt, nil)
	}
	schemas := map[string]any{
		"Error":               schemaOf(reflect.TypeOf(ErrorResponse{})),
		"Status":              schemaOf(reflect.TypeOf(StatusResponse{})),
		"Metadata":            schemaOf(reflect.TypeOf(resource.Metadata{})),
		"ApplyRequest":        map[string]any{"type": "object", "required": []string{"objects"}, "properties": map[string]any{"objects": map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/Object"}}, "dryRun": map[string]any{"type": "boolean"}}},
		"ApplyResponse":       schemaOf(reflect.TypeOf(ApplyResponse{})),
		"EventList":           schemaOf(reflect.TypeOf(EventList{})),
		"EventLogList":        schemaOf(reflect.TypeOf(EventLogList{})),
		"WebhookDeliveryList": schemaOf(reflect.TypeOf(WebhookDeliveryList{})),
		"AuditList":           schemaOf(reflect.TypeOf(AuditList{})),
		"AuditVerify":         schemaOf(reflect.TypeOf(AuditVerifyResponse{})),
		"APIToken":            schemaOf(reflect.TypeOf(APITokenCreated{}.APIToken)),
		"APITokenList":        schemaOf(reflect.TypeOf(APITokenList{})),
		"APITokenRequest":     schemaOf(reflect.TypeOf(APITokenRequest{})),
		"APITokenCreated":     schemaOf(reflect.TypeOf(APITokenCreated{})),
		"OpenAPI":             map[string]any{"type": "object"},
		"ReprovisionRequest":  schemaOf(reflect.TypeOf(ReprovisionRequest{})),
		"UpgradeRequest":      schemaOf(reflect.TypeOf(UpgradeRequest{})),
		"WorkflowView":        schemaOf(reflect.TypeOf(WorkflowView{})),
		"Version":             schemaOf(reflect.TypeOf(VersionResponse{})),
		"CancelResponse":      schemaOf(reflect.TypeOf(CancelResponse{})),
	}
	var oneOf []any
	for _, k := range resource.Kinds() {
		schemas[k.Name] = map[string]any{
			"type":     "object",
			"required": []string{"kind", "metadata"},
			"properties": map[string]any{
				"apiVersion": map[string]any{"type": "string", "enum": []string{resource.APIVersion}},
				"kind":       map[string]any{"type": "string", "enum": []string{k.Name}},
				"metadata":   map[string]any{"$ref": "#/components/schemas/Metadata"},
				"spec":       schemaOf(k.SpecType),
				"status":     map[string]any{"type": "object", "description": "Owned by Kiln; ignored on input."},
			},
			"additionalProperties": false,
		}
		oneOf = append(oneOf, map[string]any{"$ref": "#/components/schemas/" + k.Name})
		schemas[k.Name+"List"] = map[string]any{
			"type": "object",
			"properties": map[string]any{
				"items":    map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/" + k.Name}},
				"continue": map[string]any{"type": "string"},
			},
		}
	}
	schemas["Object"] = map[string]any{"oneOf": oneOf, "discriminator": map[string]any{"propertyName": "kind"}}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "Kiln operator API",
			"version": s.Version,
			"description": "Inventory of machines, profiles, artifacts, templates, workflows, join tokens, subnets, secrets (metadata only) and leases. " +
				"Every mutation is audited. Authenticate with `Authorization: Bearer <API token>`; roles: viewer (read), operator (read, write), admin (all, API tokens).",
		},
		"paths":      paths,
		"components": map[string]any{"schemas": schemas, "securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}}},
	}
}

func addOp(paths map[string]any, path string, rt route, k *resource.Kind) {
	item, _ := paths[path].(map[string]any)
	if item == nil {
		item = map[string]any{}
		paths[path] = item
	}
	ref := func(name string) map[string]any {
		if k != nil {
			switch name {
			case "Object":
				name = k.Name
			case "List":
				name = k.Name + "List"
			}
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	errResp := map[string]any{"description": "Error", "content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
	op := map[string]any{
		"summary": rt.summary,
		"responses": map[string]any{
			"2XX": map[string]any{"description": "Success", "content": map[string]any{"application/json": map[string]any{"schema": ref(rt.response)}}},
			"4XX": errResp,
			"5XX": errResp,
		},
	}
	if watchable(rt) {
		// With watch=1 the answer is a stream: "id: <resourceVersion>", "event:
		// <type>" (event; ADDED, MODIFIED, DELETED) and "data: <one-line JSON>".
		ok := op["responses"].(map[string]any)["2XX"].(map[string]any)
		ok["content"].(map[string]any)["text/event-stream"] = map[string]any{"schema": map[string]any{"type": "string",
			"description": "Server-Sent Events with watch=1: id is the resource version to resume after, event the type, data the JSON of the event or object; a ': keepalive' comment every 15 s"}}
		op["responses"].(map[string]any)["410"] = map[string]any{"description": "The resource version is older than the retained history: list again", "content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
	}
	var params []any
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") {
			params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
	}
	for _, q := range queryParams(rt) {
		params = append(params, map[string]any{"name": q, "in": "query", "required": false, "schema": map[string]any{"type": "string"}})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if rt.body != "" {
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref(rt.body)}}}
	}
	if rt.role != "" {
		op["security"] = []any{map[string]any{"bearer": []string{}}}
		op["x-kiln-role"] = rt.role
	}
	item[strings.ToLower(rt.method)] = op
}

func queryParams(rt route) []string {
	switch {
	case rt.method == http.MethodGet && rt.path == "/api/v1/{kind}":
		return []string{"labelSelector", "limit", "continue", "watch", "resourceVersion"}
	case rt.method == http.MethodGet && rt.path == "/api/v1/events":
		return []string{"machine", "type", "limit", "watch", "resourceVersion"}
	case rt.method == http.MethodDelete && rt.kindPath:
		return []string{"resourceVersion", "cascade"}
	case rt.path == "/api/v1/machines/{name}/events":
		return []string{"limit"}
	case rt.path == "/api/v1/webhooks/{name}/deliveries":
		return []string{"failed", "limit"}
	case rt.path == "/api/v1/audit":
		return []string{"after", "limit", "tail"}
	}
	return nil
}

// watchable reports whether a route answers watch=1 with a stream.
func watchable(rt route) bool {
	return rt.method == http.MethodGet && (rt.path == "/api/v1/{kind}" || rt.path == "/api/v1/events")
}

var timeT = reflect.TypeOf(time.Time{})

// schemaOf turns a Go type into a JSON schema following its json tags.
func schemaOf(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeT {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		addFields(t, props, &required)
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "object"} // json.RawMessage
		}
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}

func addFields(t reflect.Type, props map[string]any, required *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && tag == "" {
			addFields(f.Type, props, required)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type)
		if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.OpenAPI())
}
