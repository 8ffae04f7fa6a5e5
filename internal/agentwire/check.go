package agentwire

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Action is an action as a Template declares it: what CheckActions reads.
type Action struct {
	Name string
	Type string
	Args map[string]any
}

// CheckActions finds, at apply time, the action errors that do not depend on the
// machine: missing required arguments and partition layouts that can never be
// written (duplicate labels, two "rest" partitions, bad sizes or types, more than
// 128 entries). Arguments that are Go templates are left to the render, and sizes
// against the real disk to the agent.
func CheckActions(actions []Action) error {
	required := map[string][]string{
		"image2disk": {"disk", "image"},
		"image2slot": {"disk", "image", "trustedCerts"},
		"partition":  {"disk", "partitions"},
		"write-file": {"path"},
		"exec":       {"command"},
	}
	for i, a := range actions {
		path := fmt.Sprintf("spec.actions[%d] (%s).args", i, a.Name)
		args := Args(a.Args)
		for _, k := range required[a.Type] {
			if k == "image" && (args.Has("imageURL") || args.Has("url")) {
				continue
			}
			if !args.Has(k) {
				return fmt.Errorf("%s.%s: required by %s", path, k, a.Type)
			}
		}
		if v, isMap := a.Args["disk"].(map[string]any); isMap && !templated(v) {
			if _, err := ParseDiskSelector(v); err != nil {
				return fmt.Errorf("spec.actions[%d] (%s).%v", i, a.Name, err)
			}
		}
		if a.Type == "image2slot" {
			if err := checkImage2Slot(args); err != nil {
				return fmt.Errorf("%s.%v", path, err)
			}
			continue
		}
		if a.Type != "partition" || templated(a.Args["partitions"]) {
			continue
		}
		var specs []PartitionSpec
		if err := args.Decode("partitions", &specs); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		// The largest disk GPT can describe at 512-byte sectors: only what can never
		// fit anywhere is refused here.
		if _, err := PlanGPT(specs, 1<<52, 512); err != nil {
			return fmt.Errorf("%s.%v", path, err)
		}
		if err := CheckSlotLayout(specs); err != nil {
			return fmt.Errorf("%s.%v", path, err)
		}
		// A disk the template declares (a selector's minSize, args.minDiskSize) must
		// hold the layout: the smallest such disk is the one that decides.
		size, field, err := declaredDiskSize(args)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		if size > 0 {
			if _, err := PlanGPT(specs, size, 512); err != nil {
				return fmt.Errorf("%s.partitions: does not fit the %s disk (%s): %v", path, SizeText(size), field, err)
			}
		}
	}
	return nil
}

// templated reports whether a value holds a Go template anywhere.
func templated(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.Contains(x, "{{")
	case []any:
		return slices.ContainsFunc(x, templated)
	case map[string]any:
		for e := range maps.Values(x) {
			if templated(e) {
				return true
			}
		}
	}
	return false
}
