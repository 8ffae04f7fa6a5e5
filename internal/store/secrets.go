package store

import (
	"errors"
	"time"
)

// Secret values are kept by the store only encrypted (envelope encryption: each
// version has its own data key, wrapped by the key-encryption key); the store never
// sees a key or a value in clear. See internal/secrets.

var (
	// ErrHandleUsed: a single-use secret handle was already redeemed.
	ErrHandleUsed = errors.New("secret handle already used")
	// ErrHandleExpired: a secret handle's time to live has passed.
	ErrHandleExpired = errors.New("secret handle expired")
)

// SecretVersion is one encrypted value of a secret.
type SecretVersion struct {
	Name    string
	Version int64
	// KEKID names the key-encryption key that wrapped DEK (never the key itself).
	KEKID string
	// WrappedDEK is the data key sealed under the KEK (nonce and ciphertext).
	WrappedDEK []byte
	// Nonce and Ciphertext are the value sealed under the data key.
	Nonce      []byte
	Ciphertext []byte
	CreatedAt  time.Time
	// CreatedBy is the actor that set the value ("token:abc").
	CreatedBy string
}

// SecretHandle is a single-use, short-lived URL id for one secret version and one
// machine. Only the SHA-256 of the id is stored.
type SecretHandle struct {
	IDHash    string // hex SHA-256 of the handle id
	Secret    string
	Version   int64
	Machine   string
	Channel   string // what asked for it: "ignition", "cloud-init/user-data", "api", ...
	ExpiresAt time.Time
	UsedAt    *time.Time
	CreatedAt time.Time
}
