package pin

import (
	"context"
	_ "crypto/sha256" // digest algorithms the store accepts
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// maxDepth bounds how deep indexes may nest: an index of manifests is
	// depth 1, and no registry nests further than an index of indexes. It
	// keeps a loop of indexes from walking forever.
	maxDepth = 3
	// MaxImageBlobs bounds the manifests and blobs of one image. A
	// multi-platform image with attestations has a few hundred; ten
	// thousand is far past any real image and bounds what a lying index
	// can make us fetch.
	MaxImageBlobs = 10000
)

// ErrImage is the error of an image that cannot be walked: a manifest
// that does not parse or match its digest, or one past the bounds.
var ErrImage = errors.New("invalid image")

// ErrNotStored is what a Source of local content returns for a manifest
// it lacks: Walk lists such a child of an index in Image.Missing and goes
// on, so that a partly cached image can still be listed.
var ErrNotStored = errors.New("not stored")

// Manifest is a manifest as a Source gives it.
type Manifest struct {
	Digest    digest.Digest // from the answer's Docker-Content-Digest, or of Body
	MediaType string
	Body      []byte
}

// Source gives the manifests of a repository, by tag or by digest.
type Source interface {
	Manifest(ctx context.Context, ref Ref, reference string) (Manifest, error)
}

// Image is a walked image: every manifest (the root first) and every
// config and layer it names, each once.
type Image struct {
	Ref       Ref
	Root      digest.Digest
	Manifests []ocispec.Descriptor
	Blobs     []ocispec.Descriptor
	Missing   []digest.Digest // children the source does not hold (ErrNotStored)
}

// Digests returns every digest of the image, manifests first.
func (img Image) Digests() []digest.Digest {
	out := make([]digest.Digest, 0, len(img.Manifests)+len(img.Blobs))
	for _, d := range img.Manifests {
		out = append(out, d.Digest)
	}
	for _, d := range img.Blobs {
		out = append(out, d.Digest)
	}
	return out
}

// Size is the sum of the sizes the image's manifests declare.
func (img Image) Size() int64 {
	var n int64
	for _, d := range append(img.Manifests[:len(img.Manifests):len(img.Manifests)], img.Blobs...) {
		n += d.Size
	}
	return n
}

// Walk fetches ref's root manifest and every manifest under it from src,
// checks each against its digest, and lists the configs and layers. With
// match nil every platform is taken; otherwise an index's entries whose
// platform match refuses are left out (entries without a platform stay).
// Layers that registries do not distribute (foreign, non-distributable)
// are not listed.
func Walk(ctx context.Context, src Source, ref Ref, match platforms.Matcher) (Image, error) {
	w := &walker{src: src, ref: ref, match: match, seen: map[digest.Digest]bool{}}
	w.img.Ref = ref
	root, err := w.fetch(ctx, ref.Reference(), ref.Digest)
	if err != nil {
		return Image{}, err
	}
	w.img.Root = root.Digest
	desc := ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: int64(len(root.Body))}
	if err := w.walk(ctx, desc, root, 0); err != nil {
		return Image{}, err
	}
	return w.img, nil
}

type walker struct {
	src   Source
	ref   Ref
	match platforms.Matcher
	img   Image
	seen  map[digest.Digest]bool
}

// fetch gets a manifest and checks it: against want if given, else
// against the digest the source announced.
func (w *walker) fetch(ctx context.Context, reference string, want digest.Digest) (Manifest, error) {
	m, err := w.src.Manifest(ctx, w.ref, reference)
	if err != nil {
		return Manifest{}, err
	}
	alg := digest.Canonical
	switch {
	case want != "":
		alg = want.Algorithm()
	case m.Digest != "":
		alg = m.Digest.Algorithm()
	}
	if !alg.Available() {
		return Manifest{}, fmt.Errorf("%w: manifest %s of %s: unsupported digest algorithm %q", ErrImage, reference, w.ref, alg)
	}
	got := alg.FromBytes(m.Body)
	if (want != "" && got != want) || (m.Digest != "" && m.Digest != got) {
		return Manifest{}, fmt.Errorf("%w: manifest %s of %s does not match its digest", ErrImage, reference, w.ref)
	}
	m.Digest = got
	return m, nil
}

// body is what Walk reads of a manifest or an index.
type body struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
}

func (w *walker) add(list *[]ocispec.Descriptor, d ocispec.Descriptor) error {
	if w.seen[d.Digest] {
		return nil
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: %s names %q: %v", ErrImage, w.ref, d.Digest, err)
	}
	if len(w.seen) >= MaxImageBlobs {
		return fmt.Errorf("%w: %s has more than %d manifests and blobs", ErrImage, w.ref, MaxImageBlobs)
	}
	w.seen[d.Digest] = true
	*list = append(*list, d)
	return nil
}

func (w *walker) walk(ctx context.Context, desc ocispec.Descriptor, m Manifest, depth int) error {
	if err := w.add(&w.img.Manifests, desc); err != nil {
		return err
	}
	var b body
	if err := json.Unmarshal(m.Body, &b); err != nil {
		return fmt.Errorf("%w: manifest %s of %s: %v", ErrImage, m.Digest, w.ref, err)
	}
	switch {
	case b.SchemaVersion == 1:
		return fmt.Errorf("%w: %s is a schema 1 manifest, which cannot be pinned", ErrImage, w.ref)
	case b.Config != nil:
		return w.manifest(b)
	case b.Manifests != nil || isIndex(m.MediaType) || isIndex(b.MediaType):
		return w.index(ctx, b, depth)
	}
	return fmt.Errorf("%w: manifest %s of %s is neither an index nor an image manifest", ErrImage, m.Digest, w.ref)
}

func (w *walker) manifest(b body) error {
	if err := w.add(&w.img.Blobs, *b.Config); err != nil {
		return err
	}
	for _, l := range b.Layers {
		if !distributable(l.MediaType) || len(l.URLs) > 0 {
			continue
		}
		if err := w.add(&w.img.Blobs, l); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) index(ctx context.Context, b body, depth int) error {
	if depth+1 > maxDepth {
		return fmt.Errorf("%w: %s nests indexes deeper than %d", ErrImage, w.ref, maxDepth)
	}
	for _, c := range b.Manifests {
		if w.match != nil && c.Platform != nil && !w.match.Match(*c.Platform) {
			continue
		}
		if w.seen[c.Digest] {
			continue
		}
		if err := c.Digest.Validate(); err != nil {
			return fmt.Errorf("%w: %s names %q: %v", ErrImage, w.ref, c.Digest, err)
		}
		m, err := w.fetch(ctx, c.Digest.String(), c.Digest)
		if errors.Is(err, ErrNotStored) {
			w.img.Missing = append(w.img.Missing, c.Digest)
			continue
		}
		if err != nil {
			return err
		}
		if m.MediaType == "" {
			m.MediaType = c.MediaType
		}
		if err := w.walk(ctx, c, m, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// distributable reports whether registries serve a layer of this media
// type: foreign and non-distributable layers live elsewhere.
func distributable(mediaType string) bool {
	return !strings.Contains(mediaType, "nondistributable") && !strings.Contains(mediaType, "foreign")
}
