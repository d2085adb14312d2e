package ociref

import (
	_ "crypto/sha256" // registers the hashes go-digest uses
	_ "crypto/sha512"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Algorithm is a digest algorithm this node accepts. sha384 is left out
// on purpose: the OCI image spec registers only sha256 and sha512, and a
// digest the store cannot hold must not make the node fetch anything.
type Algorithm uint8

// The accepted algorithms. The zero Algorithm is none of them.
const (
	SHA256 Algorithm = iota + 1
	SHA512
)

// Algorithms returns the accepted algorithms.
func Algorithms() []Algorithm { return []Algorithm{SHA256, SHA512} }

// AlgorithmOf returns the Algorithm named a, and false if a is not
// accepted.
func AlgorithmOf(a digest.Algorithm) (Algorithm, bool) {
	switch a {
	case digest.SHA256:
		return SHA256, true
	case digest.SHA512:
		return SHA512, true
	}
	return 0, false
}

// Digest returns the go-digest name of a ("sha256", "sha512").
func (a Algorithm) Digest() digest.Algorithm {
	switch a {
	case SHA256:
		return digest.SHA256
	case SHA512:
		return digest.SHA512
	}
	return ""
}

// String returns the algorithm's name.
func (a Algorithm) String() string { return string(a.Digest()) }

// Size returns the length in bytes of a's raw sum.
func (a Algorithm) Size() int {
	switch a {
	case SHA256:
		return 32
	case SHA512:
		return 64
	}
	return 0
}

// Digest is a digest parsed once: an accepted algorithm and its raw sum.
// The zero Digest is not valid; ParseDigest is the only way to make one.
type Digest struct {
	alg Algorithm
	sum [64]byte // the first alg.Size() bytes are used
}

// ParseDigest parses "<algorithm>:<hex>", accepting exactly the digests
// the store can hold: sha256 or sha512, with the algorithm's number of
// lowercase hex digits. Other input gets an error wrapping ErrDigest.
func ParseDigest(s string) (Digest, error) {
	name, encoded, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, fmt.Errorf("%w: %q: no algorithm", ErrDigest, truncate(s))
	}
	alg, ok := AlgorithmOf(digest.Algorithm(name))
	if !ok {
		return Digest{}, fmt.Errorf("%w: %q: algorithm %q is not sha256 or sha512", ErrDigest, truncate(s), truncate(name))
	}
	d := Digest{alg: alg}
	if len(encoded) != 2*alg.Size() || !decodeLowerHex(d.sum[:], encoded) {
		return Digest{}, fmt.Errorf("%w: %q: want %d lowercase hex digits", ErrDigest, truncate(s), 2*alg.Size())
	}
	return d, nil
}

// Check reports whether d is a digest ParseDigest accepts. It checks the
// hex digits without decoding them: a digest in a request's path is
// checked on every request, and only a refusal needs ParseDigest (for
// its error).
func Check(d digest.Digest) error {
	if validDigest(string(d)) {
		return nil
	}
	_, err := ParseDigest(string(d))
	return err
}

// validDigest reports whether ParseDigest accepts s.
func validDigest(s string) bool {
	var alg Algorithm
	switch {
	case strings.HasPrefix(s, "sha256:"):
		alg = SHA256
	case strings.HasPrefix(s, "sha512:"):
		alg = SHA512
	default:
		return false
	}
	encoded := s[len("sha256:"):]
	if len(encoded) != 2*alg.Size() {
		return false
	}
	var bad byte
	for i := range len(encoded) {
		bad |= lowerHex[encoded[i]]
	}
	return bad&notHex == 0
}

// notHex marks the bytes that are not lowercase hex digits in lowerHex.
const notHex = 0x80

// lowerHex maps a lowercase hex digit to its value, and every other byte
// to notHex: one load per digit instead of two ranges of comparisons.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = notHex
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

// decodeLowerHex decodes s into dst, reporting false if s is not
// lowercase hex. It does not allocate: the store parses a digest on every
// lookup.
func decodeLowerHex(dst []byte, s string) bool {
	var bad byte
	for i := 0; i+1 < len(s); i += 2 {
		hi, lo := lowerHex[s[i]], lowerHex[s[i+1]]
		bad |= hi | lo
		dst[i/2] = hi<<4 | lo
	}
	return bad&notHex == 0
}

// Algorithm returns d's algorithm.
func (d Digest) Algorithm() Algorithm { return d.alg }

// Sum returns d's raw sum, alg.Size() bytes, in a slice of d.
func (d *Digest) Sum() []byte { return d.sum[:d.alg.Size()] }

// OCI returns d as a go-digest value, "<algorithm>:<hex>".
func (d Digest) OCI() digest.Digest {
	return digest.NewDigestFromEncoded(d.alg.Digest(), hex.EncodeToString(d.sum[:d.alg.Size()]))
}

// String returns d as "<algorithm>:<hex>".
func (d Digest) String() string { return string(d.OCI()) }
