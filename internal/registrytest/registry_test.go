package registrytest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPushedImagesReadBack(t *testing.T) {
	reg := Start(t)
	tests := []struct {
		name  string
		push  func(testing.TB, string, string, ...int64) Image
		multi bool
	}{
		{"index", reg.PushImage, true},
		{"single", reg.PushSingleImage, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.push(t, "library/"+tt.name, "v1", 1<<20, 3000, 0)
			ref, err := name.ParseReference(reg.Host()+"/"+img.Repo+":"+img.Tag, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			opts := []remote.Option{remote.WithTransport(reg.Client().Transport), remote.WithContext(t.Context())}
			if !tt.multi {
				rimg, err := remote.Image(ref, opts...)
				if err != nil {
					t.Fatal(err)
				}
				checkImage(t, rimg, img, "linux/amd64")
				return
			}
			checkIndex(t, ref, opts, img)
		})
	}
}

func checkIndex(t *testing.T, ref name.Reference, opts []remote.Option, img Image) {
	t.Helper()
	idx, err := remote.Index(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := idx.Digest(); err != nil || d.String() != img.Index.String() {
		t.Fatalf("index digest = %v, %v; want %v", d, err, img.Index)
	}
	if mt, _ := idx.MediaType(); string(mt) != img.IndexMediaType {
		t.Errorf("index media type = %q, want %q", mt, img.IndexMediaType)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d manifests, want 2", len(im.Manifests))
	}
	for _, desc := range im.Manifests {
		platform := desc.Platform.OS + "/" + desc.Platform.Architecture
		if desc.Digest.String() != img.Manifests[platform].String() {
			t.Errorf("%s: manifest %v, want %v", platform, desc.Digest, img.Manifests[platform])
		}
		rimg, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, rimg, img, platform)
	}
}

func checkImage(t *testing.T, rimg v1.Image, img Image, platform string) {
	t.Helper()
	if d, err := rimg.Digest(); err != nil || d.String() != img.Manifests[platform].String() {
		t.Fatalf("%s: manifest digest = %v, %v; want %v", platform, d, err, img.Manifests[platform])
	}
	cf, err := rimg.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS+"/"+cf.Architecture != platform {
		t.Errorf("config platform = %s/%s, want %s", cf.OS, cf.Architecture, platform)
	}
	if cn, _ := rimg.ConfigName(); cn.String() != img.Configs[platform].String() {
		t.Errorf("config = %v, want %v", cn, img.Configs[platform])
	}
	layers, err := rimg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(img.Layers[platform]) || len(cf.RootFS.DiffIDs) != len(layers) {
		t.Fatalf("%d layers and %d diff_ids, want %d", len(layers), len(cf.RootFS.DiffIDs), len(img.Layers[platform]))
	}
	for i, l := range layers {
		checkLayer(t, l, img.Layers[platform][i], img.Blobs)
		if cf.RootFS.DiffIDs[i].String() != img.Layers[platform][i].String() {
			t.Errorf("diff_id %d = %v", i, cf.RootFS.DiffIDs[i])
		}
	}
}

func checkLayer(t *testing.T, l v1.Layer, want digest.Digest, blobs map[digest.Digest][]byte) {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if d := digest.FromBytes(got); d != want || !bytes.Equal(got, blobs[want]) {
		t.Errorf("layer %v: got %d bytes with digest %v", want, len(got), d)
	}
}

func TestCounts(t *testing.T) {
	reg := Start(t)
	img := reg.PushSingleImage(t, "app", "v1", 100_000)
	if n := reg.Count(http.MethodPut, KindManifests) + reg.Count(http.MethodPost, KindUploads); n != 0 {
		t.Fatalf("pushes were counted: %d", n)
	}
	layer := img.Layers["linux/amd64"][0]
	manifest := img.Blobs[img.Manifests["linux/amd64"]]

	get(t, reg, http.MethodGet, "/v2/app/manifests/v1", http.StatusOK)
	get(t, reg, http.MethodHead, "/v2/app/manifests/v1", http.StatusOK)
	get(t, reg, http.MethodGet, "/v2/app/blobs/"+layer.String(), http.StatusOK)
	get(t, reg, http.MethodGet, "/v2/app/blobs/"+layer.String(), http.StatusOK)
	get(t, reg, http.MethodGet, "/v2/", http.StatusOK)
	get(t, reg, http.MethodGet, "/v2/app/tags/list", http.StatusOK)

	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"GET manifests", reg.ManifestRequests(http.MethodGet), 1},
		{"HEAD manifests", reg.ManifestRequests(http.MethodHead), 1},
		{"GET blobs", reg.Count(http.MethodGet, KindBlobs), 2},
		{"BlobGets", reg.BlobGets(layer), 2},
		{"GET base", reg.Count(http.MethodGet, KindBase), 1},
		{"GET tags", reg.Count(http.MethodGet, KindTags), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if got, want := reg.BytesSent(), int64(len(manifest)+2*100_000); got != want {
		t.Errorf("BytesSent = %d, want %d", got, want)
	}

	reg.ResetCounts()
	if reg.BlobGets(layer) != 0 || reg.ManifestRequests(http.MethodGet) != 0 || reg.BytesSent() != 0 {
		t.Error("ResetCounts left counts")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		path, kind, last string
	}{
		{"/v2/", KindBase, ""},
		{"/v2", KindBase, ""},
		{"/v2/a/b/manifests/latest", KindManifests, "latest"},
		{"/v2/blobs/manifests/sha256:aa", KindManifests, "sha256:aa"},
		{"/v2/a/blobs/sha256:aa", KindBlobs, "sha256:aa"},
		{"/v2/a/blobs/uploads/", KindUploads, ""},
		{"/v2/a/blobs/uploads/1234-5678", KindUploads, ""},
		{"/v2/a/b/tags/list", KindTags, ""},
		{"/v2/a/referrers/sha256:aa", KindReferrers, "sha256:aa"},
		{"/v2/_catalog", KindOther, ""},
		{"/healthz", KindOther, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			kind, last := classify(tt.path)
			if kind != tt.kind || last != tt.last {
				t.Errorf("classify = %q, %q; want %q, %q", kind, last, tt.kind, tt.last)
			}
		})
	}
}

func TestCloseRefusesConnections(t *testing.T) {
	reg := Start(t)
	get(t, reg, http.MethodGet, "/v2/", http.StatusOK)
	reg.Close()
	reg.Close() // idempotent
	resp, err := http.Get(reg.URL() + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET after Close: %s, want a connection error", resp.Status)
	}
}

func TestCloseCutsTransfers(t *testing.T) {
	reg := Start(t, WithThrottle(64<<10))
	d := reg.PushBlob(t, "app", Random(1, 4<<20)) // a minute at 64 KiB/s
	resp := open(t, t.Context(), reg, http.MethodGet, "/v2/app/blobs/"+d.String(), http.StatusOK)
	defer resp.Body.Close()

	start := time.Now()
	reg.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("body read completed after Close")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
}

// get makes a request through the network, checks its status and returns
// the body.
func get(t *testing.T, reg *Registry, method, path string, status int) []byte {
	t.Helper()
	resp := open(t, t.Context(), reg, method, path, status)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return body
}

// open makes a request through the network, checks its status and returns
// the response with its body unread.
func open(t *testing.T, ctx context.Context, reg *Registry, method, path string, status int) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, reg.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		resp.Body.Close()
		t.Fatalf("%s %s: %s, want %d", method, path, resp.Status, status)
	}
	return resp
}

func TestConcurrentPullsAndPushes(t *testing.T) {
	reg := Start(t)
	img := reg.PushImage(t, "app", "v1", 256<<10)
	layer := img.Layers["linux/arm64"][0]

	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			resp, err := reg.Client().Get(reg.URL() + "/v2/app/blobs/" + layer.String())
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && digest.FromBytes(body) != layer {
					err = io.ErrUnexpectedEOF
				}
			}
			errs <- err
		}()
	}
	reg.PushImage(t, "other", "v1", 256<<10)
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := reg.BlobGets(layer); n != cap(errs) {
		t.Errorf("BlobGets = %d, want %d", n, cap(errs))
	}
}

func TestWithoutHeadDigest(t *testing.T) {
	reg := Start(t, WithoutHeadDigest())
	reg.PushSingleImage(t, "library/app", "v1", 100)
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		req, err := http.NewRequestWithContext(t.Context(), method, reg.URL()+"/v2/library/app/manifests/v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := reg.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Docker-Content-Digest")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", method, resp.StatusCode)
		}
		if method == http.MethodHead && got != "" {
			t.Errorf("HEAD sent Docker-Content-Digest %q, want none", got)
		}
		if method == http.MethodGet && got == "" {
			t.Errorf("GET sent no Docker-Content-Digest")
		}
	}
}
