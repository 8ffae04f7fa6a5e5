package power

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The Redfish resources (DSP0268 schemas) the driver reads, and how they are
// decoded: only the properties that power control, boot override and virtual media
// need; the rest of a response, OEM additions included, is ignored.

type odataID struct {
	ID string `json:"@odata.id"`
}

type serviceRoot struct {
	Systems        odataID
	SessionService odataID
	Links          struct {
		Sessions odataID
	}
}

type collection struct {
	Members []odataID
}

type computerSystem struct {
	ODataID    string `json:"@odata.id"`
	ETag       string `json:"@odata.etag"`
	ID         string `json:"Id"`
	PowerState string
	Boot       struct {
		Target         string   `json:"BootSourceOverrideTarget"`
		TargetAllowed  []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
		Enabled        string   `json:"BootSourceOverrideEnabled"`
		EnabledAllowed []string `json:"BootSourceOverrideEnabled@Redfish.AllowableValues"`
		Mode           string   `json:"BootSourceOverrideMode"`
		ModeAllowed    []string `json:"BootSourceOverrideMode@Redfish.AllowableValues"`
	}
	Actions struct {
		Reset struct {
			Target     string   `json:"target"`
			Allowed    []string `json:"ResetType@Redfish.AllowableValues"`
			ActionInfo string   `json:"@Redfish.ActionInfo"`
		} `json:"#ComputerSystem.Reset"`
	}
	VirtualMedia odataID
	Links        struct {
		ManagedBy []odataID
	}
}

type actionInfo struct {
	Parameters []struct {
		Name            string
		AllowableValues []string
	}
}

type manager struct {
	VirtualMedia odataID
}

type virtualMedia struct {
	ODataID    string `json:"@odata.id"`
	ETag       string `json:"@odata.etag"`
	ID         string `json:"Id"`
	Name       string
	MediaTypes []string
	Image      string
	Inserted   bool
	Actions    struct {
		Insert struct {
			Target string `json:"target"`
		} `json:"#VirtualMedia.InsertMedia"`
		Eject struct {
			Target string `json:"target"`
		} `json:"#VirtualMedia.EjectMedia"`
	}
}

// decodeResource parses one Redfish resource, which must be a JSON object.
func decodeResource(data []byte, what string, v any) error {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%w: %s: not a JSON object", ErrMalformed, what)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return nil
}

// parseSystem parses a ComputerSystem resource.
func parseSystem(data []byte) (*computerSystem, error) {
	var s computerSystem
	if err := decodeResource(data, "ComputerSystem", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// resetTypesFromActionInfo returns the AllowableValues of the ResetType parameter.
func resetTypesFromActionInfo(data []byte) ([]string, error) {
	var ai actionInfo
	if err := decodeResource(data, "ActionInfo", &ai); err != nil {
		return nil, err
	}
	for _, p := range ai.Parameters {
		if p.Name == "ResetType" {
			return p.AllowableValues, nil
		}
	}
	return nil, nil
}

var redfishStateName = map[State]string{StateOn: "On", StateOff: "Off"}

func redfishState(s string) State {
	switch s {
	case "On":
		return StateOn
	case "Off":
		return StateOff
	case "PoweringOn":
		return StatePoweringOn
	case "PoweringOff":
		return StatePoweringOff
	case "Paused": // ComputerSystem v1.16: a VM that is not running
		return StateOff
	}
	return StateUnknown
}
