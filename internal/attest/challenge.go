package attest

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-attestation/attest"
)

// AKParams are the attestation key's creation parameters as the TPM produced them
// (TPMT_PUBLIC, TPMS_CREATION_DATA, TPMS_ATTEST, TPMT_SIGNATURE): enough for Kiln to
// check the key is a restricted, non-exportable signing key made by a TPM.
type AKParams struct {
	Public            []byte
	CreateData        []byte
	CreateAttestation []byte
	CreateSignature   []byte
}

// Challenge is what Kiln sends the agent: a nonce to quote over and, for an
// activation, the credential only the TPM holding the EK can decrypt, and only for
// the AK whose name it was made for.
type Challenge struct {
	ID      string
	Nonce   []byte
	Expires time.Time
	// Credential and Secret are TPM2_MakeCredential's credentialBlob and secret;
	// empty for a re-quote with an AK that was activated before.
	Credential []byte
	Secret     []byte
}

// Answer is the agent's reply to a Challenge.
type Answer struct {
	// ActivatedSecret is what TPM2_ActivateCredential returned; empty for a re-quote.
	ActivatedSecret []byte
	Quotes          []Quote
	PCRs            []PCR
	EventLog        []byte
}

// Quote is a TPMS_ATTEST (quote) and the AK's TPMT_SIGNATURE over it.
type Quote struct {
	Quote     []byte
	Signature []byte
}

// PCR is one PCR value the agent read; it counts only once a quote covers it.
type PCR struct {
	Index  int
	SHA256 bool // false: the SHA-1 bank
	Digest []byte
}

// Result is what a verified answer proves.
type Result struct {
	Machine  string
	EKSHA256 string
	// AKPublic is the activated AK's TPMT_PUBLIC: later quotes (renewals) must be
	// signed by this key.
	AKPublic     []byte
	AKSHA256     string
	Measurements Measurements
	QuotedAt     time.Time
}

// Defaults for NewChallenges.
const (
	// DefaultChallengeTTL: the agent answers in well under a second; a minute
	// leaves room for a slow TPM (RSA key creation takes seconds on some) without
	// letting a captured challenge live.
	DefaultChallengeTTL = time.Minute
	// DefaultMaxPending bounds the memory an anonymous flood of activation
	// requests can take.
	DefaultMaxPending = 10000
	nonceSize         = 32
)

// Challenges issues and verifies single-use challenges. Pending challenges live in
// memory: an answer must reach the replica that issued its challenge (a restart
// loses them and the agent starts over, which costs one round trip).
type Challenges struct {
	ttl        time.Duration
	maxPending int
	now        func() time.Time

	mu      sync.Mutex
	pending map[string]pendingChallenge
}

type pendingChallenge struct {
	machine  string
	ekSHA256 string
	// secret is the credential activation's expected answer; nil for a re-quote.
	secret   []byte
	nonce    []byte
	akPublic []byte
	expires  time.Time
}

// NewChallenges makes a challenge store; zero ttl or maxPending take the defaults,
// a nil now is time.Now.
func NewChallenges(ttl time.Duration, maxPending int, now func() time.Time) *Challenges {
	if now == nil {
		now = time.Now
	}
	return &Challenges{
		ttl:        cmp.Or(ttl, DefaultChallengeTTL),
		maxPending: cmp.Or(maxPending, DefaultMaxPending),
		now:        now,
		pending:    map[string]pendingChallenge{},
	}
}

// ErrTooManyChallenges: the pending store is full of unexpired challenges.
var ErrTooManyChallenges = errors.New("too many TPM challenges pending; try again later")

// Activation checks ak (a restricted, fixed-TPM signing key created by a TPM) and
// makes a credential for ak's name encrypted to ek (TPM2_MakeCredential): only the
// TPM holding ek can decrypt it, and only into that AK's name. ek must be checked
// (pin or vendor chain) by the caller before.
func (c *Challenges) Activation(machine string, ek EK, ak AKParams) (Challenge, error) {
	params := attest.ActivationParameters{
		EK: ek.Public,
		AK: attest.AttestationParameters{
			Public:            ak.Public,
			CreateData:        ak.CreateData,
			CreateAttestation: ak.CreateAttestation,
			CreateSignature:   ak.CreateSignature,
		},
	}
	secret, cred, err := params.Generate()
	if err != nil {
		return Challenge{}, fmt.Errorf("make credential for machine %s: ak: %w", machine, err)
	}
	return c.add(pendingChallenge{machine: machine, ekSHA256: ek.SHA256, secret: secret, akPublic: ak.Public}, cred.Credential, cred.Secret)
}

// Requote issues a nonce for a quote by an AK activated before (a renewal).
func (c *Challenges) Requote(machine, ekSHA256 string, akPublic []byte) (Challenge, error) {
	if _, err := attest.ParseAKPublic(akPublic); err != nil {
		return Challenge{}, fmt.Errorf("re-quote machine %s: stored ak: %w", machine, err)
	}
	return c.add(pendingChallenge{machine: machine, ekSHA256: ekSHA256, akPublic: akPublic}, nil, nil)
}

func (c *Challenges) add(p pendingChallenge, credential, secret []byte) (Challenge, error) {
	p.nonce = make([]byte, nonceSize)
	rand.Read(p.nonce)
	idBytes := make([]byte, 16)
	rand.Read(idBytes)
	id := hex.EncodeToString(idBytes)
	now := c.now()
	p.expires = now.Add(c.ttl)

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= c.maxPending {
		for k, v := range c.pending {
			if !now.Before(v.expires) {
				delete(c.pending, k)
			}
		}
		if len(c.pending) >= c.maxPending {
			return Challenge{}, ErrTooManyChallenges
		}
	}
	c.pending[id] = p
	return Challenge{ID: id, Nonce: p.nonce, Expires: p.expires, Credential: credential, Secret: secret}, nil
}

// Pending is how many challenges wait for an answer.
func (c *Challenges) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Verify checks the answer to challenge id for machine: the activated secret
// (activations), the AK's signature over Kiln's nonce and the PCRs, and the event
// log's replay to those PCRs. The challenge is used up whatever the outcome: a
// second answer, right or wrong, is refused, so a captured quote cannot be replayed
// and a wrong guess cannot be retried.
func (c *Challenges) Verify(id, machine string, a Answer) (Result, error) {
	c.mu.Lock()
	p, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		return Result{}, fmt.Errorf("tpm challenge %q: unknown or already answered", id)
	}
	now := c.now()
	if !now.Before(p.expires) {
		return Result{}, fmt.Errorf("tpm challenge %q: expired at %s", id, p.expires.UTC().Format(time.RFC3339))
	}
	if p.machine != machine {
		return Result{}, fmt.Errorf("tpm challenge %q: issued to another machine", id)
	}
	if p.secret != nil && subtle.ConstantTimeCompare(p.secret, a.ActivatedSecret) != 1 {
		return Result{}, errors.New("credential activation: the answer is not the secret Kiln encrypted to the EK (another TPM, or another AK)")
	}
	m, err := VerifyQuote(p.akPublic, p.nonce, a)
	if err != nil {
		return Result{}, err
	}
	akSum := sha256.Sum256(p.akPublic)
	return Result{
		Machine:      machine,
		EKSHA256:     p.ekSHA256,
		AKPublic:     p.akPublic,
		AKSHA256:     hex.EncodeToString(akSum[:]),
		Measurements: m,
		QuotedAt:     now,
	}, nil
}
