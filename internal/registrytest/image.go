package registrytest

import (
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image describes what PushImage or PushSingleImage pushed.
type Image struct {
	Repo, Tag string
	// Index is the digest of the OCI image index tagged Tag; empty for a
	// single-platform image, whose manifest is tagged instead.
	Index          digest.Digest
	IndexMediaType string
	// Manifests, Configs and Layers are keyed by platform, such as
	// "linux/amd64".
	Manifests map[string]digest.Digest
	Configs   map[string]digest.Digest
	Layers    map[string][]digest.Digest
	// Blobs holds the bytes of every layer, config, manifest and index.
	Blobs map[digest.Digest][]byte
}

// Random returns n deterministic, incompressible bytes for seed, from a
// ChaCha8 stream (several GB/s).
func Random(seed uint64, n int64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// PushImage pushes a multi-arch image tagged tag to repo: an OCI image index
// over linux/amd64 and linux/arm64 manifests, each with a valid OCI config
// and one layer per size in layerSizes. Layers are random bytes, deterministic
// for (repo, tag, platform, position) and different between platforms; they
// carry the tar+gzip media type but are not archives, and their diff_ids are
// their own digests. Every byte pushed is kept in Image.Blobs, so large
// layers cost their size twice in memory: once there, once in the registry.
func (r *Registry) PushImage(tb testing.TB, repo, tag string, layerSizes ...int64) Image {
	tb.Helper()
	img := newImage(repo, tag)
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
	}
	for _, p := range []ocispec.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
	} {
		desc := r.pushPlatform(tb, &img, p, "", layerSizes)
		index.Manifests = append(index.Manifests, desc)
	}
	body := marshal(tb, index)
	img.Index = r.PushManifest(tb, repo, tag, ocispec.MediaTypeImageIndex, body)
	img.IndexMediaType = ocispec.MediaTypeImageIndex
	img.Blobs[img.Index] = body
	return img
}

// PushSingleImage pushes a linux/amd64 OCI image manifest tagged tag, built
// as for PushImage but without an index.
func (r *Registry) PushSingleImage(tb testing.TB, repo, tag string, layerSizes ...int64) Image {
	tb.Helper()
	img := newImage(repo, tag)
	r.pushPlatform(tb, &img, ocispec.Platform{OS: "linux", Architecture: "amd64"}, tag, layerSizes)
	return img
}

func newImage(repo, tag string) Image {
	return Image{
		Repo:      repo,
		Tag:       tag,
		Manifests: make(map[string]digest.Digest),
		Configs:   make(map[string]digest.Digest),
		Layers:    make(map[string][]digest.Digest),
		Blobs:     make(map[digest.Digest][]byte),
	}
}

// pushPlatform pushes the layers, config and manifest of one platform and
// records them in img. The manifest is tagged tag, or pushed by digest if
// tag is empty. It returns the manifest's descriptor for an index.
func (r *Registry) pushPlatform(tb testing.TB, img *Image, p ocispec.Platform, tag string, layerSizes []int64) ocispec.Descriptor {
	tb.Helper()
	key := p.OS + "/" + p.Architecture
	layers := make([]ocispec.Descriptor, len(layerSizes))
	diffIDs := make([]digest.Digest, len(layerSizes))
	for i, size := range layerSizes {
		data := Random(seed(img.Repo, img.Tag, key, i), size)
		d := r.PushBlob(tb, img.Repo, data)
		img.Blobs[d] = data
		layers[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: size}
		diffIDs[i] = d
		img.Layers[key] = append(img.Layers[key], d)
	}

	config := marshal(tb, ocispec.Image{
		Platform: p,
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/true"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	configDigest := r.PushBlob(tb, img.Repo, config)
	img.Blobs[configDigest] = config
	img.Configs[key] = configDigest

	manifest := marshal(tb, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageConfig,
			Digest:    configDigest,
			Size:      int64(len(config)),
		},
		Layers: layers,
	})
	ref := tag
	if ref == "" {
		ref = digest.FromBytes(manifest).String()
	}
	manifestDigest := r.PushManifest(tb, img.Repo, ref, ocispec.MediaTypeImageManifest, manifest)
	img.Blobs[manifestDigest] = manifest
	img.Manifests[key] = manifestDigest
	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest,
		Digest:    manifestDigest,
		Size:      int64(len(manifest)),
		Platform:  &p,
	}
}

// seed derives a layer's Random seed from its place in an image.
func seed(repo, tag, platform string, layer int) uint64 {
	h := fnv.New64a()
	for _, s := range []string{repo, tag, platform} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	_ = binary.Write(h, binary.LittleEndian, int64(layer))
	return h.Sum64()
}

func marshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("registrytest: marshal %T: %v", v, err)
	}
	return b
}
