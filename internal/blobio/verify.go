package blobio

import (
	_ "crypto/sha256" // registers the hashes go-digest uses
	_ "crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors of verification, tested with errors.Is.
var (
	ErrDigestMismatch = errors.New("content does not match digest")
	ErrSizeMismatch   = errors.New("content does not match expected size")
)

// Releasable returns how many of the n bytes received so far may be
// passed on: all of them once the content is verified, all but the last
// until then. Holding back one byte means no reader ever sees a complete
// body whose digest has not been checked: a transfer that fails
// verification ends visibly short, never looking whole.
func Releasable(n int64, verified bool) int64 {
	if verified || n == 0 {
		return n
	}
	return n - 1
}

// Digester hashes bytes as they are written and checks them, at the end,
// against a digest and an expected size. It is not safe for concurrent
// use.
type Digester struct {
	want digest.Digest
	size int64 // expected, or -1
	hash hash.Hash
	n    int64
}

// NewDigester returns a Digester for content d of size bytes (-1 if not
// known). d must be of an available algorithm (ociref checks that).
func NewDigester(d digest.Digest, size int64) *Digester {
	return &Digester{want: d, size: size, hash: d.Algorithm().Hash()}
}

// Write hashes p. It never fails.
func (g *Digester) Write(p []byte) (int, error) {
	g.hash.Write(p)
	g.n += int64(len(p))
	return len(p), nil
}

// Written returns the number of bytes hashed.
func (g *Digester) Written() int64 { return g.n }

// Verify checks the bytes written so far against the size, then the
// digest, with an error wrapping ErrSizeMismatch or ErrDigestMismatch.
func (g *Digester) Verify() error {
	if g.size >= 0 && g.n != g.size {
		return fmt.Errorf("%w: %s: got %d bytes, want %d", ErrSizeMismatch, g.want, g.n, g.size)
	}
	if got := digest.NewDigest(g.want.Algorithm(), g.hash); got != g.want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, g.want)
	}
	return nil
}

// verifierBuffer is the size of a Verifier's buffer: large enough that
// copying through it costs little next to the hashing.
const verifierBuffer = 32 << 10

// Verifier passes a stream through while hashing it, and holds back the
// last byte (Releasable) until the digest and size are checked, so a
// reader never receives a complete stream with wrong content. A mismatch
// is reported instead of io.EOF, wrapping ErrDigestMismatch or
// ErrSizeMismatch. It is not safe for concurrent use.
type Verifier struct {
	src   io.Reader
	dg    *Digester
	buf   []byte
	ready []byte // verified-safe bytes of buf not yet returned
	held  []byte // bytes read but not yet releasable
	err   error  // io.EOF once verified, or why it failed
}

// NewVerifier checks src against d and, if size is not -1, size.
func NewVerifier(src io.Reader, d digest.Digest, size int64) *Verifier {
	return &Verifier{src: src, dg: NewDigester(d, size)}
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	for len(v.ready) == 0 {
		if v.err != nil {
			return 0, v.err
		}
		v.fill()
	}
	n := copy(p, v.ready)
	v.ready = v.ready[n:]
	return n, nil
}

// fill reads the next chunk into buf, after the held bytes.
func (v *Verifier) fill() {
	if v.buf == nil {
		v.buf = make([]byte, verifierBuffer)
	}
	off := copy(v.buf, v.held)
	n, err := v.src.Read(v.buf[off:])
	v.dg.Write(v.buf[off : off+n])
	total := off + n
	switch {
	case err == io.EOF:
		if v.err = v.dg.Verify(); v.err == nil {
			v.ready, v.held, v.err = v.buf[:total], nil, io.EOF
		}
	case err != nil:
		v.err = err
	default:
		keep := Releasable(int64(total), false)
		v.ready = v.buf[:keep]
		v.held = append(v.held[:0], v.buf[keep:total]...)
	}
}
