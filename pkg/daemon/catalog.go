package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/pin"
)

// ImageView is one cached image as the operations view lists it: a root
// manifest (one no cached index names) or a manifest a tag names.
type ImageView struct {
	Names     []string      `json:"names"` // registry/repository:tag, from tag records and pins
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Bytes     int64         `json:"bytes"`   // stored bytes of its manifests, configs and layers
	Entries   int           `json:"entries"` // of those, how many are stored
	Missing   int           `json:"missing"` // named by its manifests but not stored
	LastUsed  time.Time     `json:"lastUsed"`
	Pinned    bool          `json:"pinned"`
}

// catalog is what the store holds, read into images: every manifest on
// disk is walked, without counting it as a use.
type catalog struct {
	store  *diskstore.Store
	images map[digest.Digest]pin.Image // by root
	names  map[digest.Digest][]string
}

// localSource reads manifests from the store, by digest only.
type localSource struct{ store *diskstore.Store }

func (l localSource) Manifest(_ context.Context, _ pin.Ref, reference string) (pin.Manifest, error) {
	d, err := digest.Parse(reference)
	if err != nil {
		return pin.Manifest{}, fmt.Errorf("%w: %s is not a digest", pin.ErrNotStored, reference)
	}
	f, info, err := l.store.Peek(d)
	if errors.Is(err, diskstore.ErrNotFound) {
		return pin.Manifest{}, fmt.Errorf("%w: %s", pin.ErrNotStored, d)
	}
	if err != nil {
		return pin.Manifest{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAdminManifest+1))
	if err != nil {
		return pin.Manifest{}, err
	}
	return pin.Manifest{Digest: d, MediaType: info.MediaType, Body: b}, nil
}

// maxAdminManifest bounds a manifest read from the store, as the mirror
// bounds what it stores (4 MiB).
const maxAdminManifest = 4 << 20

// newCatalog walks every manifest in the store, and names the images with
// the mirror's tag records and the pins.
func newCatalog(ctx context.Context, store *diskstore.Store, m *mirror.Server, pins []pin.Image) *catalog {
	c := &catalog{store: store, images: map[digest.Digest]pin.Image{}, names: map[digest.Digest][]string{}}
	src := localSource{store: store}
	walked := map[digest.Digest]pin.Image{}
	child := map[digest.Digest]bool{}
	for _, info := range store.Manifests() {
		img, err := pin.Walk(ctx, src, pin.Ref{Digest: info.Digest}, nil)
		if err != nil {
			continue // not an image manifest (a signature, an artifact) or damaged
		}
		walked[info.Digest] = img
		for _, d := range img.Manifests[1:] {
			child[d.Digest] = true
		}
	}
	name := func(d digest.Digest, n string) {
		if !slices.Contains(c.names[d], n) {
			c.names[d] = append(c.names[d], n)
		}
	}
	if m != nil {
		m.Tags(func(t mirror.Tag) { name(t.Digest, t.Registry+"/"+t.Repository+":"+t.Tag) })
	}
	for _, p := range pins {
		name(p.Root, p.Ref.String())
	}
	for d, img := range walked {
		if !child[d] || len(c.names[d]) > 0 {
			c.images[d] = img
		}
	}
	return c
}

// view summarises one image from the store's index.
func (c *catalog) view(root digest.Digest) ImageView {
	img := c.images[root]
	v := ImageView{Names: c.names[root], Digest: root, Pinned: c.store.Pinned(root), Missing: len(img.Missing)}
	sort.Strings(v.Names)
	for _, d := range img.Digests() {
		info, err := c.store.Stat(d)
		if err != nil {
			v.Missing++
			continue
		}
		if d == root {
			v.MediaType = info.MediaType
		}
		v.Entries++
		v.Bytes += info.Size
		if info.Accessed.After(v.LastUsed) {
			v.LastUsed = info.Accessed
		}
	}
	return v
}

// list is every image, by name then digest.
func (c *catalog) list() []ImageView {
	out := make([]ImageView, 0, len(c.images))
	for d := range c.images {
		out = append(out, c.view(d))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (len(a.Names) > 0) != (len(b.Names) > 0) {
			return len(a.Names) > 0
		}
		if len(a.Names) > 0 && a.Names[0] != b.Names[0] {
			return a.Names[0] < b.Names[0]
		}
		return a.Digest < b.Digest
	})
	return out
}

// resolve finds the images ref names: by its digest, or by every tag
// record of its registry, repository and tag.
func (c *catalog) resolve(ref pin.Ref) []digest.Digest {
	if ref.Digest != "" {
		if _, ok := c.images[ref.Digest]; ok {
			return []digest.Digest{ref.Digest}
		}
		return nil
	}
	want := ref.Registry + "/" + ref.Repository + ":" + ref.Tag
	var out []digest.Digest
	for d, names := range c.names {
		if _, ok := c.images[d]; ok && slices.Contains(names, want) {
			out = append(out, d)
		}
	}
	return out
}

// EvictResult is what evicting an image did.
type EvictResult struct {
	Images  []digest.Digest `json:"images"`
	Deleted int             `json:"deleted"` // entries removed
	Bytes   int64           `json:"bytes"`   // their bytes
	Shared  int             `json:"shared"`  // entries kept: another cached image uses them, or a pin holds them
}

// errPinned refuses to evict a pinned image.
var errPinned = errors.New("pinned")

// evict deletes the entries of the images roots that no other image of
// the catalog uses and no pin holds. It refuses, deleting nothing, if
// one of the images is pinned itself.
func (c *catalog) evict(roots []digest.Digest) (EvictResult, error) {
	res := EvictResult{Images: roots}
	drop := map[digest.Digest]bool{}
	for _, r := range roots {
		if c.store.Pinned(r) {
			return res, fmt.Errorf("%w: %s is pinned by --pin-file; remove it there first", errPinned, r)
		}
		for _, d := range c.images[r].Digests() {
			drop[d] = true
		}
	}
	keep := map[digest.Digest]bool{}
	for r, img := range c.images {
		if slices.Contains(roots, r) {
			continue
		}
		for _, d := range img.Digests() {
			keep[d] = true
		}
	}
	for d := range drop {
		if keep[d] {
			res.Shared++
			continue
		}
		// The pin is checked by the store in the same step as the
		// removal: the pin manager may pin d at any moment.
		info, err := c.store.DeleteUnpinned(d)
		switch {
		case errors.Is(err, diskstore.ErrPinned):
			res.Shared++
		case errors.Is(err, diskstore.ErrNotFound):
		case err != nil:
			return res, err
		default:
			res.Deleted++
			res.Bytes += info.Size
		}
	}
	return res, nil
}
