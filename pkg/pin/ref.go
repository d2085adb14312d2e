// Package pin keeps whole images in the store: it reads a pin file of
// image references, walks each image (index, manifests, configs, layers)
// through the node's own mirror, so that peers, credentials and
// verification apply as to any pull, and gives the store the set of
// digests it must never evict. Pinned tags are resolved again every
// refresh interval; when one has moved, the new image is fetched and
// pinned before the old one is let go.
//
// The image walk and the HTTP source are also what `nodecache prefetch`
// uses against a running daemon.
//
// It does not store or verify bytes itself (the store and the mirror do),
// and it decides nothing about eviction beyond what is pinned.
package pin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// ErrRef is the error of a reference that cannot be pinned or fetched.
var ErrRef = errors.New("invalid image reference")

// Ref is an image reference: a registry, a repository, and a tag, a
// digest or both. With both, the digest is what is fetched and the tag is
// only shown.
type Ref struct {
	Registry   string        // docker.io, ghcr.io, localhost:5000
	Repository string        // library/nginx
	Tag        string        // "" with a digest alone
	Digest     digest.Digest // "" to resolve the tag
}

// ParseRef parses an image reference as docker and containerd do:
// "nginx" is docker.io/library/nginx:latest; "ghcr.io/o/r@sha256:..." is
// pinned by digest.
func ParseRef(s string) (Ref, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w %q: %v", ErrRef, s, err)
	}
	r := Ref{Registry: reference.Domain(named), Repository: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		if _, err := ociref.ParseDigest(d.Digest().String()); err != nil {
			return Ref{}, fmt.Errorf("%w %q: %v", ErrRef, s, err)
		}
		r.Digest = d.Digest()
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if err := ociref.CheckName(r.Repository); err != nil {
		return Ref{}, fmt.Errorf("%w %q: %v", ErrRef, s, err)
	}
	return r, nil
}

// Reference is the tag or digest the mirror is asked for: the digest
// when there is one.
func (r Ref) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// String is the reference in full: registry/repository[:tag][@digest].
func (r Ref) String() string {
	var b strings.Builder
	b.WriteString(r.Registry + "/" + r.Repository)
	if r.Tag != "" {
		b.WriteString(":" + r.Tag)
	}
	if r.Digest != "" {
		b.WriteString("@" + r.Digest.String())
	}
	return b.String()
}
