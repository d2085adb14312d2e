package credentials

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// identityKeySize is the HMAC key length: SHA-256's own 256 bits.
const identityKeySize = 32

// Identifier names credentials without keeping them, so that caches can be
// keyed per credential (a token minted for one client is never sent for
// another; an access check passed by one client is not reused for another)
// while holding no secret. An identity is an HMAC-SHA256 of every part of
// an Auth under a random key made by NewIdentifier, so it means nothing
// outside the Identifier that made it: two Identifiers, in one process or
// two, name the same credentials differently, and a stolen identity
// cannot be checked against guessed passwords without the key.
//
// The zero Identifier has no key; Of panics on it. An Identifier is safe
// for concurrent use, and fmt and slog never show its key.
type Identifier struct{ key []byte }

// NewIdentifier returns an Identifier with a fresh random key that lives
// only in memory.
func NewIdentifier() Identifier {
	k := make([]byte, identityKeySize)
	_, _ = rand.Read(k) // crypto/rand.Read never fails on supported platforms
	return Identifier{key: k}
}

// Of returns the identity of a: "" when a holds no credential, else 64 hex
// digits that differ whenever any of a's fields differs.
func (id Identifier) Of(a Auth) string {
	if a.IsZero() {
		return ""
	}
	if id.key == nil {
		panic("credentials: Of on a zero Identifier; use NewIdentifier")
	}
	m := hmac.New(sha256.New, id.key)
	var n [8]byte
	// Each part is written with its length first, so no choice of bytes in
	// one field can make two different Auths hash the same stream.
	for _, part := range []string{a.Username, a.Password, a.IdentityToken, a.RegistryToken} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write([]byte(part))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// String hides the key.
func (id Identifier) String() string { return "credentials.Identifier" }

// GoString hides the key from %#v.
func (id Identifier) GoString() string { return id.String() }

// Format makes every verb print String, so that no verb prints the key.
func (id Identifier) Format(f fmt.State, _ rune) { fmt.Fprint(f, id.String()) }

// LogValue hides the key from slog.
func (id Identifier) LogValue() slog.Value { return slog.StringValue(id.String()) }
