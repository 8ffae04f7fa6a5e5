package watch

import (
	"encoding/json"

	"github.com/kilnhq/kiln/internal/resource"
)

func profileObject(name string) *resource.Object {
	return &resource.Object{APIVersion: resource.APIVersion, Kind: "Profile", Metadata: resource.Metadata{Name: name},
		Spec: json.RawMessage(`{"boot":{"agent":true}}`)}
}
