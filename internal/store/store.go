// Package store is Kiln's persistence seam: one interface, implemented on SQLite
// (embedded, the default) and PostgreSQL (several replicas). Both pass the same
// conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/resource"
	"github.com/kilnhq/kiln/internal/role"
)

var (
	// ErrNotFound: no object, token or entry of that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: Create of a name that is taken.
	ErrExists = errors.New("already exists")
	// ErrConflict: the object changed since the caller read it (stale resourceVersion).
	ErrConflict = errors.New("resource version conflict")
	// ErrDuplicateKey: a unique key (a MAC) is claimed by another object.
	ErrDuplicateKey = errors.New("duplicate key")
)

// KeyConflictError says which object holds a unique key. It wraps ErrDuplicateKey.
type KeyConflictError struct {
	Key   string // "mac:52:54:00:00:00:01"
	Kind  string
	Owner string
}

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("%s is already claimed by %s %q", e.Key, e.Kind, e.Owner)
}
func (e *KeyConflictError) Unwrap() error { return ErrDuplicateKey }

// ListOptions filters and pages a list. Lists are ordered by name.
type ListOptions struct {
	Selector resource.Selector
	Limit    int    // 0: no limit
	Continue string // the name after which to start (the previous page's last name)
}

// Event is one entry of a machine's timeline.
type Event struct {
	ID      int64     `json:"id"`
	Machine string    `json:"machine"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
}

// Change types: what a committed write did to an object (as Kubernetes watches name them).
const (
	ChangeAdded    = "ADDED"
	ChangeModified = "MODIFIED"
	ChangeDeleted  = "DELETED"
)

// UnloggedKind is the kind whose writes the change log leaves out: leases, which
// DHCP rewrites at every packet (logging them halved DHCP's leases per second).
const UnloggedKind = "Lease"

// Change is one committed write of an object, from the change log that watches
// read. Seq grows with every write, in commit order, on every replica alike.
type Change struct {
	Seq  int64
	Type string // ChangeAdded, ChangeModified, ChangeDeleted
	// Object is the object as written; for a delete, as it was.
	Object *resource.Object
}

// StreamMarks are the ends of the event log and of the change log: the newest
// sequence written (Head) and the newest one retention removed (Floor; a resume
// from before it may have missed something).
type StreamMarks struct {
	EventHead, EventFloor   int64
	ChangeHead, ChangeFloor int64
}

// Roles an API token can carry (package role names them for those that do not
// import the store).
const (
	RoleAdmin    = role.Admin
	RoleOperator = role.Operator
	RoleViewer   = role.Viewer
)

// APIToken is an operator credential; only the SHA-256 of its secret part is kept.
type APIToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Hash      string     `json:"-"`
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// Store is a transactional inventory store.
type Store interface {
	// Update runs fn in one read-write transaction; writers are serialized (also across
	// replicas on PostgreSQL). If fn returns an error nothing it did is kept.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	Ping(ctx context.Context) error
	Close() error
}

// CommitNotifier is implemented by stores that tell, without polling, when this
// process committed a transaction that added events or changed objects: a watch
// then reads at once; other replicas' writes are found by polling the logs.
type CommitNotifier interface {
	// Committed returns a channel closed at the next such commit.
	Committed() <-chan struct{}
}

// KeysNotifier is implemented by stores that count this process's own commits that
// claimed or released unique keys, so that a cache of keys (ListKeys, KeysVersion)
// sees them at once; other replicas' changes show in KeysVersion only.
type KeysNotifier interface {
	LocalKeysChanges() int64
}

// Tx is what a transaction can do.
type Tx interface {
	Get(ctx context.Context, kind, name string) (*resource.Object, error)
	List(ctx context.Context, kind string, opts ListOptions) (objs []*resource.Object, next string, err error)
	// Create stores a new object with resourceVersion "1" and sets its timestamps.
	Create(ctx context.Context, obj *resource.Object) error
	// CreateBatch stores new objects as Create does, in few statements (the DHCP
	// group commit writes its leases so). An object whose name is taken, or named
	// twice in objs, is not stored and is reported in taken (ErrExists for
	// Create); any other error fails the call (the transaction should then be
	// rolled back).
	CreateBatch(ctx context.Context, objs []*resource.Object) (taken []bool, err error)
	// Update replaces spec, labels and status. obj.Metadata.ResourceVersion must be the
	// stored one (ErrConflict otherwise); on success it is the new one.
	Update(ctx context.Context, obj *resource.Object) error
	// Delete removes an object; resourceVersion "" deletes whatever version is stored.
	Delete(ctx context.Context, kind, name, resourceVersion string) error
	// LookupKey finds the object of a kind claiming a unique key ("mac:...").
	LookupKey(ctx context.Context, kind, key string) (*resource.Object, error)
	// ListKeys returns every unique key of a kind's objects that starts with prefix,
	// sorted.
	ListKeys(ctx context.Context, kind, prefix string) ([]string, error)
	// KeysVersion changes (grows) with every committed transaction that claimed or
	// released a unique key, whichever replica wrote it: a cache of ListKeys is
	// current while it reads the same number.
	KeysVersion(ctx context.Context) (int64, error)

	// AppendAudit seals e into the hash chain (sets Seq, PrevHash, Hash) and stores it.
	AppendAudit(ctx context.Context, e *audit.Entry) error
	// ListAudit returns up to limit entries with Seq > after, in order (limit 0: all).
	ListAudit(ctx context.Context, after int64, limit int) ([]audit.Entry, error)
	// AuditHead returns the newest entry's sequence and hash as recorded apart from the entries.
	AuditHead(ctx context.Context) (seq int64, hash string, err error)

	AddEvent(ctx context.Context, e *Event) error
	// ListEvents returns a machine's newest limit events, oldest first.
	ListEvents(ctx context.Context, machine string, limit int) ([]Event, error)

	// EventsAfter returns up to limit events (limit > 0) with ID > after, oldest
	// first, of one machine or (machine "") of every machine.
	EventsAfter(ctx context.Context, machine string, after int64, limit int) ([]Event, error)
	// ChangesAfter returns up to limit changes (limit > 0) with Seq > after, in
	// order, of one kind or (kind "") of every kind.
	ChangesAfter(ctx context.Context, kind string, after int64, limit int) ([]Change, error)
	// StreamMarks returns the heads and floors of the event and change logs.
	StreamMarks(ctx context.Context) (StreamMarks, error)

	CreateAPIToken(ctx context.Context, t *APIToken) error
	GetAPIToken(ctx context.Context, id string) (*APIToken, error)
	ListAPITokens(ctx context.Context) ([]APIToken, error)
	RevokeAPIToken(ctx context.Context, id string, at time.Time) error

	// ListAuditFor returns up to limit entries about one object (kind and name) with
	// Seq > after, in order (limit 0: all).
	ListAuditFor(ctx context.Context, kind, name string, after int64, limit int) ([]audit.Entry, error)

	// AddSecretVersion stores the next version of a secret: v.Version is set to the
	// newest stored version + 1 (1 for the first) and v.CreatedAt to now if zero.
	AddSecretVersion(ctx context.Context, v *SecretVersion) error
	// GetSecretVersion reads one version; version 0 means the newest. ErrNotFound if none.
	GetSecretVersion(ctx context.Context, name string, version int64) (*SecretVersion, error)
	// ListSecretVersions returns a secret's versions (name "": every secret's), ordered
	// by name and version.
	ListSecretVersions(ctx context.Context, name string) ([]SecretVersion, error)
	// RewrapSecretVersion replaces the wrapped data key of one version (KEK rotation).
	RewrapSecretVersion(ctx context.Context, name string, version int64, kekID string, wrappedDEK []byte) error
	// SecretKEKIDs lists the distinct key-encryption key ids the stored versions use.
	SecretKEKIDs(ctx context.Context) ([]string, error)
	// CurrentSecretKEK returns the id of the key-encryption key the secrets are keyed
	// with, as recorded by the last SetCurrentSecretKEK ("" if never recorded).
	CurrentSecretKEK(ctx context.Context) (string, error)
	// SetCurrentSecretKEK records the key-encryption key id (first start, rotation).
	SetCurrentSecretKEK(ctx context.Context, id string) error
	// DeleteSecretData removes every version and handle of a secret; it returns how
	// many versions it removed.
	DeleteSecretData(ctx context.Context, name string) (int64, error)

	// CreateSecretHandle stores a new handle (ErrExists if its hash is taken).
	CreateSecretHandle(ctx context.Context, h *SecretHandle) error
	// GetSecretHandle reads a handle by the hash of its id.
	GetSecretHandle(ctx context.Context, idHash string) (*SecretHandle, error)
	// UseSecretHandle redeems a handle at time at: exactly one caller, across replicas,
	// succeeds. It returns the handle, and ErrHandleUsed or ErrHandleExpired (with the
	// handle) when it cannot be redeemed, ErrNotFound for an unknown hash.
	UseSecretHandle(ctx context.Context, idHash string, at time.Time) (*SecretHandle, error)
	// PurgeSecretHandles removes handles that expired before before; it returns how many.
	PurgeSecretHandles(ctx context.Context, before time.Time) (int64, error)
}
