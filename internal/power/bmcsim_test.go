package power

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// bmcSim is a Redfish BMC for tests, built from a mockup directory of real BMC
// responses (testdata/redfish/<mockup>/redfish/v1/<path>/index.json). It serves
// the files as they are, keeps the state a BMC changes (PowerState, the boot
// override, virtual media) and applies Reset, PATCH and the VirtualMedia actions
// to it as a BMC would: ResetTypes outside the mockup's allowable values and
// boot targets outside BootSourceOverrideTarget@Redfish.AllowableValues are
// refused with a Redfish error.
type bmcSim struct {
	t   *testing.T
	cfg simConfig
	srv *httptest.Server

	mu           sync.Mutex
	raw          map[string][]byte         // path (no trailing slash) -> file bytes
	docs         map[string]map[string]any // parsed, for resources that change
	dirty        map[string]bool           // served from docs instead of raw
	etags        map[string]string
	etagN        int
	systemPath   string
	resetTarget  string
	resetTypes   []string
	sessionsPath string
	sessions     map[string]string // token -> session path
	pending      *pendingPower
	task         *simTask

	// Observations for assertions.
	resets         []string
	deletedSession []string
	created        int
	basicUsed      int
	patches        int
	requests       []string
}

type pendingPower struct {
	state string
	at    time.Time
}

type simConfig struct {
	fixture        string
	user, password string
	noSessions     bool          // POST Sessions answers 405: basic auth only
	requireIfMatch bool          // PATCH without If-Match: 428; stale: 412
	staleOnce      bool          // the first PATCH answers 412 whatever its If-Match
	stuck          bool          // accept resets, never change PowerState
	transition     time.Duration // PowerState passes through PoweringOn/PoweringOff this long
	malformed      bool          // the ComputerSystem is served truncated
	dropBootTarget string        // removed from BootSourceOverrideTarget@Redfish.AllowableValues
	dropResetType  string        // removed from the inline ResetType@Redfish.AllowableValues
	noActionInfo   bool          // the @Redfish.ActionInfo resource answers 404
	powerState     string        // initial PowerState, instead of the mockup's
	asyncReset     int           // Reset answers 202 with a task monitor that says 202 this many times
	resetTaskFails bool          // that task ends in Exception, with a message, and changes nothing
}

// simTaskMonitor is where an asynchronous Reset's task is watched.
const simTaskMonitor = "/redfish/v1/TaskService/TaskMonitors/1"

type simTask struct {
	polls int    // 202s left
	final string // PowerState once the task completes
	fail  bool
}

func newBMCSim(t *testing.T, cfg simConfig) *bmcSim {
	t.Helper()
	if cfg.user == "" {
		cfg.user, cfg.password = testUser, testPassword
	}
	s := &bmcSim{t: t, cfg: cfg, raw: map[string][]byte{}, docs: map[string]map[string]any{},
		dirty: map[string]bool{}, etags: map[string]string{}, sessions: map[string]string{}}
	root := filepath.Join("testdata", "redfish", cfg.fixture)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "index.json" {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s.raw["/"+filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil || len(s.raw) == 0 {
		t.Fatalf("load mockup %s: %v (%d files)", root, err, len(s.raw))
	}
	var systems collection
	s.mustDecode("/redfish/v1/Systems", &systems)
	s.systemPath = strings.TrimSuffix(systems.Members[0].ID, "/")
	sys := s.doc(s.systemPath)
	if cfg.powerState != "" {
		sys["PowerState"] = cfg.powerState
	}
	if cfg.dropBootTarget != "" {
		boot := sys["Boot"].(map[string]any)
		var keep []any
		for _, v := range boot["BootSourceOverrideTarget@Redfish.AllowableValues"].([]any) {
			if v != cfg.dropBootTarget {
				keep = append(keep, v)
			}
		}
		boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = keep
	}
	if cfg.dropResetType != "" {
		reset := sys["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
		var keep []any
		for _, v := range reset["ResetType@Redfish.AllowableValues"].([]any) {
			if v != cfg.dropResetType {
				keep = append(keep, v)
			}
		}
		reset["ResetType@Redfish.AllowableValues"] = keep
	}
	s.dirty[s.systemPath] = true
	var cs computerSystem
	s.mustDecode(s.systemPath, &cs)
	s.resetTarget = cs.Actions.Reset.Target
	switch {
	case len(cs.Actions.Reset.Allowed) > 0:
		s.resetTypes = cs.Actions.Reset.Allowed
	case cs.Actions.Reset.ActionInfo != "":
		types, err := resetTypesFromActionInfo(s.raw[strings.TrimSuffix(cs.Actions.Reset.ActionInfo, "/")])
		if err != nil || len(types) == 0 {
			t.Fatalf("mockup %s: ActionInfo: %v", cfg.fixture, err)
		}
		s.resetTypes = types
	default:
		s.resetTypes = defaultResetTypes
	}
	if cfg.noActionInfo {
		delete(s.raw, strings.TrimSuffix(cs.Actions.Reset.ActionInfo, "/"))
	}
	var sr serviceRoot
	s.mustDecode("/redfish/v1", &sr)
	s.sessionsPath = strings.TrimSuffix(sr.Links.Sessions.ID, "/")
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *bmcSim) mustDecode(p string, v any) {
	s.t.Helper()
	b, ok := s.raw[p]
	if s.dirty[p] {
		b, _ = json.Marshal(s.docs[p])
		ok = true
	}
	if !ok {
		s.t.Fatalf("mockup %s has no %s", s.cfg.fixture, p)
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.t.Fatalf("mockup %s %s: %v", s.cfg.fixture, p, err)
	}
}

// doc returns the parsed, mutable form of a resource.
func (s *bmcSim) doc(p string) map[string]any {
	if d, ok := s.docs[p]; ok {
		return d
	}
	var d map[string]any
	if err := json.Unmarshal(s.raw[p], &d); err != nil {
		s.t.Fatalf("mockup %s %s: %v", s.cfg.fixture, p, err)
	}
	s.docs[p] = d
	return d
}

func (s *bmcSim) etag(p string) string {
	if e, ok := s.etags[p]; ok {
		return e
	}
	var e struct {
		ETag string `json:"@odata.etag"`
	}
	_ = json.Unmarshal(s.raw[p], &e)
	if e.ETag == "" {
		s.etagN++
		e.ETag = fmt.Sprintf(`W/"sim-%d"`, s.etagN)
	}
	s.etags[p] = e.ETag
	return e.ETag
}

// changed marks a resource modified: served from docs, with a new ETag.
func (s *bmcSim) changed(p string) {
	s.dirty[p] = true
	s.etagN++
	s.etags[p] = fmt.Sprintf(`W/"sim-%d"`, s.etagN)
	if d := s.docs[p]; d != nil {
		if _, ok := d["@odata.etag"]; ok {
			d["@odata.etag"] = s.etags[p]
		}
	}
}

func (s *bmcSim) URL() string { return s.srv.URL }

// Fingerprint is the SHA-256 of the simulator's certificate.
func (s *bmcSim) Fingerprint() string { return Fingerprint(s.srv.Certificate()) }

func (s *bmcSim) PowerState() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyPending()
	return s.doc(s.systemPath)["PowerState"].(string)
}

func (s *bmcSim) Boot() (target, enabled string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.doc(s.systemPath)["Boot"].(map[string]any)
	target, _ = b["BootSourceOverrideTarget"].(string)
	enabled, _ = b["BootSourceOverrideEnabled"].(string)
	return target, enabled
}

// BootMode is the system's BootSourceOverrideMode ("" when it has none).
func (s *bmcSim) BootMode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, _ := s.doc(s.systemPath)["Boot"].(map[string]any)["BootSourceOverrideMode"].(string)
	return m
}

// SetBootProperty changes a property of the system's Boot object (nil removes
// it), as another BMC firmware would show it.
func (s *bmcSim) SetBootProperty(k string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.doc(s.systemPath)["Boot"].(map[string]any)
	if v == nil {
		delete(b, k)
	} else {
		b[k] = v
	}
	s.changed(s.systemPath)
}

// Requests lists the requests served, as "METHOD /path".
func (s *bmcSim) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *bmcSim) Resets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resets)
}

func (s *bmcSim) ClearResets() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resets = nil
}

func (s *bmcSim) Sessions() (created, open int, deleted []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created, len(s.sessions), slices.Clone(s.deletedSession)
}

// ExpireSessions ends every session, as a BMC's session timeout does.
func (s *bmcSim) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
}

func (s *bmcSim) applyPending() {
	if s.pending != nil && !time.Now().Before(s.pending.at) {
		s.doc(s.systemPath)["PowerState"] = s.pending.state
		s.changed(s.systemPath)
		s.pending = nil
	}
}

func (s *bmcSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := strings.TrimSuffix(r.URL.Path, "/")
	s.requests = append(s.requests, r.Method+" "+p)
	s.applyPending()

	switch {
	case p == "/redfish/v1" && r.Method == http.MethodGet:
		s.serve(w, p) // the service root needs no authentication
		return
	case p == s.sessionsPath && r.Method == http.MethodPost:
		s.login(w, r)
		return
	}
	if !s.authorized(r) {
		redfishErr(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	switch r.Method {
	case http.MethodGet:
		if p == simTaskMonitor && s.task != nil {
			s.pollTask(w)
			return
		}
		if s.cfg.malformed && p == s.systemPath {
			w.Header().Set("Content-Type", "application/json")
			b, _ := json.Marshal(s.doc(p))
			w.Write(b[:len(b)/2])
			return
		}
		s.serve(w, p)
	case http.MethodPost:
		switch {
		case p == s.resetTarget:
			s.reset(w, r)
		case strings.HasSuffix(p, "/Actions/VirtualMedia.InsertMedia"):
			s.media(w, r, strings.TrimSuffix(p, "/Actions/VirtualMedia.InsertMedia"), true)
		case strings.HasSuffix(p, "/Actions/VirtualMedia.EjectMedia"):
			s.media(w, r, strings.TrimSuffix(p, "/Actions/VirtualMedia.EjectMedia"), false)
		default:
			redfishErr(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", "POST is not supported here.")
		}
	case http.MethodPatch:
		s.patch(w, r, p)
	case http.MethodDelete:
		for tok, sp := range s.sessions {
			if sp == p {
				delete(s.sessions, tok)
				s.deletedSession = append(s.deletedSession, p)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		redfishErr(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI was not found.")
	default:
		redfishErr(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "Method not allowed.")
	}
}

func (s *bmcSim) serve(w http.ResponseWriter, p string) {
	b, ok := s.raw[p]
	if s.dirty[p] {
		b, _ = json.Marshal(s.docs[p])
		ok = true
	}
	if !ok {
		redfishErr(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI "+p+" was not found.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", s.etag(p))
	w.Write(b)
}

func redfishErr(w http.ResponseWriter, status int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": "Base.1.8.GeneralError", "message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": id, "Message": msg}},
	}})
}

func (s *bmcSim) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.noSessions {
		redfishErr(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "Sessions are not supported.")
		return
	}
	var c struct{ UserName, Password string }
	if json.NewDecoder(r.Body).Decode(&c) != nil || c.UserName != s.cfg.user || c.Password != s.cfg.password {
		redfishErr(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "Invalid user name or password.")
		return
	}
	var b [16]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	sp := s.sessionsPath + "/kiln" + tok[:8]
	s.sessions[tok] = sp
	s.created++
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", sp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"@odata.id": sp, "Id": path.Base(sp), "UserName": c.UserName})
}

func (s *bmcSim) authorized(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		_, ok := s.sessions[tok]
		return ok
	}
	if u, p, ok := r.BasicAuth(); ok && u == s.cfg.user && p == s.cfg.password {
		s.basicUsed++
		return true
	}
	return false
}

func (s *bmcSim) reset(w http.ResponseWriter, r *http.Request) {
	var body struct{ ResetType string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		redfishErr(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON.")
		return
	}
	rt := body.ResetType
	if !slices.Contains(s.resetTypes, rt) {
		redfishErr(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList",
			fmt.Sprintf("The value '%s' for the parameter ResetType is not in the list of acceptable values.", rt))
		return
	}
	s.resets = append(s.resets, rt)
	sys := s.doc(s.systemPath)
	cur, _ := sys["PowerState"].(string)
	var final, during string
	switch rt {
	case "On", "ForceOn":
		final, during = "On", "PoweringOn"
	case "ForceOff", "GracefulShutdown":
		final, during = "Off", "PoweringOff"
	case "PushPowerButton":
		final, during = "Off", "PoweringOff"
		if cur == "Off" {
			final, during = "On", "PoweringOn"
		}
	case "PowerCycle", "ForceRestart", "GracefulRestart":
		final, during = "On", "Off"
	default: // Nmi
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if s.cfg.stuck {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if s.cfg.asyncReset > 0 {
		s.task = &simTask{polls: s.cfg.asyncReset, final: final, fail: s.cfg.resetTaskFails}
		w.Header().Set("Location", simTaskMonitor)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if s.cfg.transition > 0 {
		sys["PowerState"] = during
		s.pending = &pendingPower{state: final, at: time.Now().Add(s.cfg.transition)}
	} else {
		sys["PowerState"] = final
	}
	s.changed(s.systemPath)
	w.WriteHeader(http.StatusNoContent)
}

// pollTask answers the task monitor: 202 while the task runs, then the Task;
// a completed task applies its power change.
func (s *bmcSim) pollTask(w http.ResponseWriter) {
	t := s.task
	if t.polls > 0 {
		t.polls--
		w.Header().Set("Location", simTaskMonitor)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.task = nil
	task := map[string]any{"@odata.id": "/redfish/v1/TaskService/Tasks/1", "Id": "1", "TaskState": "Completed", "TaskStatus": "OK"}
	if t.fail {
		task["TaskState"], task["TaskStatus"] = "Exception", "Critical"
		task["Messages"] = []any{map[string]any{"MessageId": "Base.1.8.InternalError", "Message": "The power supply refused the request."}}
	} else {
		s.doc(s.systemPath)["PowerState"] = t.final
		s.changed(s.systemPath)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(task)
}

// checkIfMatch applies the If-Match rules: 428 when required and absent, 412 when stale.
func (s *bmcSim) checkIfMatch(w http.ResponseWriter, r *http.Request, p string) bool {
	im := r.Header.Get("If-Match")
	if s.cfg.staleOnce && s.patches == 1 {
		redfishErr(w, http.StatusPreconditionFailed, "Base.1.8.PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.")
		return false
	}
	if im == "" {
		if s.cfg.requireIfMatch {
			redfishErr(w, http.StatusPreconditionRequired, "Base.1.8.PreconditionRequired", "A precondition header or annotation is required to change this resource.")
			return false
		}
		return true
	}
	if im != "*" && im != s.etag(p) {
		redfishErr(w, http.StatusPreconditionFailed, "Base.1.8.PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.")
		return false
	}
	return true
}

func (s *bmcSim) patch(w http.ResponseWriter, r *http.Request, p string) {
	s.patches++
	if !s.checkIfMatch(w, r, p) {
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		redfishErr(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON.")
		return
	}
	doc := s.doc(p)
	if p == s.systemPath {
		patchBoot, _ := body["Boot"].(map[string]any)
		boot, _ := doc["Boot"].(map[string]any)
		if patchBoot == nil || boot == nil {
			redfishErr(w, http.StatusBadRequest, "Base.1.8.PropertyUnknown", "Only Boot can be changed here.")
			return
		}
		for k, v := range patchBoot {
			if allowed, ok := boot[k+"@Redfish.AllowableValues"].([]any); ok && !slices.Contains(allowed, v) {
				redfishErr(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
					fmt.Sprintf("The value '%v' for the property %s is not in the list of acceptable values.", v, k))
				return
			}
			if _, known := boot[k]; !known && k != "BootSourceOverrideEnabled" {
				redfishErr(w, http.StatusBadRequest, "Base.1.8.PropertyUnknown", "The property "+k+" is not in the list of valid properties for the resource.")
				return
			}
			boot[k] = v
		}
	} else if _, isMedia := doc["Inserted"]; isMedia {
		for _, k := range []string{"Image", "Inserted"} {
			if v, ok := body[k]; ok {
				doc[k] = v
			}
		}
	} else {
		redfishErr(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "PATCH is not supported here.")
		return
	}
	s.changed(p)
	w.WriteHeader(http.StatusNoContent)
}

func (s *bmcSim) media(w http.ResponseWriter, r *http.Request, p string, insert bool) {
	doc := s.doc(p)
	var body struct{ Image string }
	_ = json.NewDecoder(r.Body).Decode(&body)
	if insert {
		if ins, _ := doc["Inserted"].(bool); ins {
			// iLO and AMI refuse to insert over an inserted image.
			redfishErr(w, http.StatusBadRequest, "Base.1.8.ActionNotSupported", "Media is already inserted; eject it first.")
			return
		}
		if body.Image == "" {
			redfishErr(w, http.StatusBadRequest, "Base.1.8.ActionParameterMissing", "The action requires the parameter Image.")
			return
		}
		doc["Image"], doc["Inserted"] = body.Image, true
	} else {
		doc["Image"], doc["Inserted"] = "", false
	}
	s.changed(p)
	w.WriteHeader(http.StatusNoContent)
}

func (s *bmcSim) MediaSlot(p string) (image string, inserted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.doc(p)
	image, _ = d["Image"].(string)
	inserted, _ = d["Inserted"].(bool)
	return image, inserted
}
