//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"nodecache/internal/registrytest"
)

// TestCRIPullThroughNodecache pulls an image the way the kubelet does:
// through containerd's CRI ImageService over its socket, with the CRI's
// registry config_path pointing at the hosts directory that `nodecache
// hosts` wrote. The pull must come through nodecache; then, with the
// upstream stopped and the image removed through CRI, it must pull again
// from nodecache's cache alone.
//
// It runs once per containerd build: Debian's 1.6, and the pinned 2.x
// with each of its CRI pulls, the transfer service's (its default) and
// the local one (use_local_image_pull).
func TestCRIPullThroughNodecache(t *testing.T) {
	eachCRIPull(t, testCRIPull)
}

func testCRIPull(t *testing.T, b containerdBuild) {
	reg := registrytest.Start(t)
	img := pushUnpackableImage(t, reg, "e2e/cri", "v1", "nodecache e2e\n")
	nc := startNodecache(t, reg)
	ctrd := startContainerdCRI(t, b, writeHostsDir(t, nc, reg))
	images := criImages(t, ctrd)
	ref := reg.Host() + "/" + img.repo + ":" + img.tag

	img.pull(t, images, ref)
	for _, d := range img.blobs {
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("upstream served blob %s %d times, want once (through nodecache)", d, n)
		}
	}
	for _, d := range img.all() {
		if !nc.holds(d) {
			t.Errorf("nodecache's store lacks %s after the CRI pull", d)
		}
	}
	requireContent(t, ctrd, img.all())
	if t.Failed() {
		t.FailNow()
	}

	reg.Close()
	ctx, cancel := context.WithTimeout(t.Context(), ctrTimeout)
	defer cancel()
	if _, err := images.RemoveImage(ctx, &cri.RemoveImageRequest{Image: &cri.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("CRI RemoveImage: %v", err)
	}
	if st, err := images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: ref}}); err != nil || st.Image != nil {
		t.Fatalf("CRI ImageStatus after RemoveImage: %v, %v; want no image", st, err)
	}
	// The CRI deletes the last reference synchronously, so containerd's
	// garbage collector has removed the content by now.
	if left := ctrd.present(t, img.all()); len(left) > 0 {
		t.Fatalf("content still in containerd after CRI RemoveImage: %v", left)
	}

	mark := len(nc.Output())
	img.pull(t, images, ref)
	requireContent(t, ctrd, img.all())
	if !strings.Contains(nc.Output()[mark:], "serving stale tag") {
		t.Errorf("nodecache did not log serving a stale tag on the second pull")
	}
	if !t.Failed() {
		fmt.Printf("e2e: %s: CRI PullImage via nodecache (%d blobs); after RemoveImage, pulled again with upstream down: ok\n", b, len(img.blobs))
	}
}

// criImages connects to containerd's CRI ImageService over its socket, as
// the kubelet does.
func criImages(t *testing.T, c *containerd) cri.ImageServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cri.NewImageServiceClient(conn)
}

// unpackableImage is a single-platform image whose layers are real gzipped
// tar archives, since the CRI unpacks every image it pulls.
type unpackableImage struct {
	repo, tag string
	manifest  digest.Digest
	config    digest.Digest
	blobs     []digest.Digest // layers and config
}

func (img unpackableImage) all() []digest.Digest {
	return append([]digest.Digest{img.manifest}, img.blobs...)
}

// pull pulls ref through the CRI and checks the image ID it reports.
func (img unpackableImage) pull(t *testing.T, images cri.ImageServiceClient, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ctrTimeout)
	defer cancel()
	resp, err := images.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatalf("CRI PullImage %s: %v", ref, err)
	}
	if resp.ImageRef != img.config.String() {
		t.Fatalf("CRI PullImage returned image %s, want the config digest %s", resp.ImageRef, img.config)
	}
}

// pushUnpackableImage pushes an OCI image for this machine's platform with
// two layers: a file of random bytes, then a small text file holding
// release. Images pushed with the same repo and tag but another release
// share the first layer and differ in everything else.
func pushUnpackableImage(t *testing.T, reg *registrytest.Registry, repo, tag, release string) unpackableImage {
	t.Helper()
	img := unpackableImage{repo: repo, tag: tag}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for i, file := range []struct {
		name string
		data []byte
	}{
		{"data/random.bin", registrytest.Random(42, 1_000_000)},
		{"etc/e2e-release", []byte(release)},
	} {
		tarball, gz := layerArchive(t, file.name, file.data)
		d := reg.PushBlob(t, repo, gz)
		img.blobs = append(img.blobs, d)
		diffIDs = append(diffIDs, digest.FromBytes(tarball))
		layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(gz))})
		t.Logf("layer %d: %s (%d bytes gzipped)", i, d, len(gz))
	}
	config := mustJSON(t, ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	img.config = reg.PushBlob(t, repo, config)
	img.blobs = append(img.blobs, img.config)
	manifest := mustJSON(t, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: img.config, Size: int64(len(config))},
		Layers:    layers,
	})
	img.manifest = reg.PushManifest(t, repo, tag, ocispec.MediaTypeImageManifest, manifest)
	return img
}

// layerArchive returns a tar archive holding one file, and its gzip.
func layerArchive(t *testing.T, name string, data []byte) (tarball, gz []byte) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	if dir, _, ok := strings.Cut(name, "/"); ok {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gb bytes.Buffer
	zw := gzip.NewWriter(&gb)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return tb.Bytes(), gb.Bytes()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
