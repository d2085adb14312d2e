package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
	"nodecache/pkg/daemon"
)

// adminEnv is a real daemon in front of a real registry, with its admin
// API on a metrics listener of its own.
type adminEnv struct {
	up      *registrytest.Registry
	d       *daemontest.Process
	admin   string
	dataDir string
}

func startAdminEnv(t *testing.T, up *registrytest.Registry, extra ...string) *adminEnv {
	t.Helper()
	e := &adminEnv{up: up, admin: daemontest.FreeAddr(t), dataDir: t.TempDir()}
	args := append([]string{"--metrics-listen", e.admin, "--data-dir", e.dataDir,
		"--registry", up.Host() + "=" + up.URL(), "--allow-registry", up.Host(),
		"--tag-ttl", "1s", "--shutdown-grace", "1s", "--log-format", "json"}, extra...)
	e.d = daemontest.MustStart(t, daemontest.Binary(t), args...)
	return e
}

// run runs a nodecache command against e and returns its output and exit
// status.
func (e *adminEnv) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out strings.Builder
	err := dispatch(context.Background(), args, &out, &out)
	if err != nil {
		out.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), exitOf(err)
}

func (e *adminEnv) images(t *testing.T) []daemon.ImageView {
	t.Helper()
	out, code := e.run(t, "ls", "--admin", e.admin, "--json")
	if code != 0 {
		t.Fatalf("ls --json: exit %d\n%s", code, out)
	}
	var res struct{ Images []daemon.ImageView }
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	return res.Images
}

func find(images []daemon.ImageView, name string) (daemon.ImageView, bool) {
	for _, img := range images {
		for _, n := range img.Names {
			if n == name {
				return img, true
			}
		}
	}
	return daemon.ImageView{}, false
}

// pushSharing pushes to repo:tag an image whose config and first layer
// are a's, with one layer of its own, and returns its manifest digest and
// its own layer.
func pushSharing(t *testing.T, up *registrytest.Registry, a registrytest.Image, repo, tag string) (manifest, own digest.Digest) {
	t.Helper()
	cfg, layer := a.Configs["linux/amd64"], a.Layers["linux/amd64"][0]
	up.PushBlob(t, repo, a.Blobs[cfg])
	up.PushBlob(t, repo, a.Blobs[layer])
	data := registrytest.Random(99, 3000)
	own = up.PushBlob(t, repo, data)
	body, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: int64(len(a.Blobs[cfg]))},
		Layers: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layer, Size: int64(len(a.Blobs[layer]))},
			{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: own, Size: int64(len(data))},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return up.PushManifest(t, repo, tag, ocispec.MediaTypeImageManifest, body), own
}

// TestPrefetchLsEvict: prefetch caches whole images and exits 0 only when
// the daemon confirms every blob; ls lists them; evict removes an image's
// own entries and keeps those another image shares.
func TestPrefetchLsEvict(t *testing.T) {
	up := registrytest.Start(t)
	a := up.PushImage(t, "apps/a", "v1", 4000)
	bRoot, bOwn := pushSharing(t, up, a, "apps/b", "v1")
	e := startAdminEnv(t, up)
	refA, refB := up.Host()+"/apps/a:v1", up.Host()+"/apps/b:v1"

	// A blob that arrives damaged fails the prefetch, and the store lacks it.
	up.SetFault(up.WrongBytes(10, registrytest.Path("GET", "/v2/apps/b/blobs/"+bOwn.String())))
	out, code := e.run(t, "prefetch", "--mirror", e.d.Addr, "--admin", e.admin, refB)
	if code == 0 || !strings.Contains(out, "FAILED") {
		t.Fatalf("prefetch with a damaged blob: exit %d\n%s", code, out)
	}
	up.SetFault(nil)

	out, code = e.run(t, "prefetch", "--mirror", e.d.Addr, "--admin", e.admin, refA, refB)
	if code != 0 {
		t.Fatalf("prefetch: exit %d\n%s", code, out)
	}
	for d := range a.Blobs {
		if !strings.Contains(out, d.String()) && d != a.Index && d != a.Manifests["linux/amd64"] && d != a.Manifests["linux/arm64"] {
			t.Errorf("no progress line for blob %s", d)
		}
	}

	images := e.images(t)
	ia, okA := find(images, refA)
	ib, okB := find(images, refB)
	if !okA || !okB || ia.Digest != a.Index || ib.Digest != bRoot || ia.Missing != 0 || ib.Missing != 0 || ia.Pinned {
		t.Fatalf("ls: %+v", images)
	}
	var sizeA int64
	for _, b := range a.Blobs {
		sizeA += int64(len(b))
	}
	if ia.Bytes != sizeA {
		t.Fatalf("ls gives %s %d bytes, want %d", refA, ia.Bytes, sizeA)
	}
	out, code = e.run(t, "ls", "--admin", e.admin)
	if code != 0 || !strings.Contains(out, refA) || !strings.Contains(out, "LAST USED") {
		t.Fatalf("ls: exit %d\n%s", code, out)
	}

	out, code = e.run(t, "evict", "--admin", e.admin, refB)
	if code != 0 || !strings.Contains(out, "2 entries") || !strings.Contains(out, "2 kept") {
		t.Fatalf("evict %s: exit %d\n%s", refB, code, out)
	}
	images = e.images(t)
	if _, ok := find(images, refB); ok {
		t.Fatalf("%s still listed after evict: %+v", refB, images)
	}
	if ia, ok := find(images, refA); !ok || ia.Missing != 0 || ia.Bytes != sizeA {
		t.Fatalf("evicting %s damaged %s, which shares its blobs: %+v", refB, refA, ia)
	}
	out, code = e.run(t, "evict", "--admin", e.admin, refB)
	if code == 0 || !strings.Contains(out, "not cached") {
		t.Fatalf("evict of an image not cached: exit %d\n%s", code, out)
	}
	// By bare digest, as ls --json shows it: A's index and everything
	// under it go, since no other image uses them any more.
	out, code = e.run(t, "evict", "--admin", e.admin, a.Index.String())
	if code != 0 || !strings.Contains(out, "evicted "+a.Index.String()) {
		t.Fatalf("evict by digest: exit %d\n%s", code, out)
	}
	if images := e.images(t); len(images) != 0 {
		t.Fatalf("images left after evicting both: %+v", images)
	}
}

// TestPrefetchFailsWhenTheStoreCannotKeepABlob: a blob read whole and
// verified, but streamed uncached for want of room, fails the prefetch:
// exit 0 means the store holds every blob, not that every read went well.
func TestPrefetchFailsWhenTheStoreCannotKeepABlob(t *testing.T) {
	up := registrytest.Start(t)
	img := up.PushSingleImage(t, "apps/big", "v1", 30_000)
	e := startAdminEnv(t, up, "--max-size", "20000")
	ref := up.Host() + "/apps/big:v1"
	layer := img.Layers["linux/amd64"][0]
	out, code := e.run(t, "prefetch", "--mirror", e.d.Addr, "--admin", e.admin, ref)
	if code != 1 || !strings.Contains(out, "ok "+ref+" "+layer.String()) || !strings.Contains(out, "NOT IN THE STORE "+layer.String()) {
		t.Fatalf("prefetch of a layer past --max-size: exit %d, want 1 with the layer read but not in the store\n%s", code, out)
	}
}

// TestAdminIsNotOnTheMirrorListener: the admin API answers on the metrics
// listener only.
func TestAdminIsNotOnTheMirrorListener(t *testing.T) {
	e := startAdminEnv(t, registrytest.Start(t))
	if out, code := e.run(t, "ls", "--admin", e.d.Addr); code == 0 {
		t.Fatalf("ls against the mirror listener: exit 0\n%s", out)
	}
	if out, code := e.run(t, "ls", "--admin", e.admin); code != 0 || !strings.Contains(out, "IMAGE") {
		t.Fatalf("ls against the metrics listener: exit %d\n%s", code, out)
	}
}

// TestPinnedImageIsMarkedAndKept: a pinned image shows as pinned, and
// evict refuses it.
func TestPinnedImageIsMarkedAndKept(t *testing.T) {
	up := registrytest.Start(t)
	img := up.PushSingleImage(t, "sys/pause", "3.10", 2000)
	ref := up.Host() + "/sys/pause:3.10"
	pins := filepath.Join(t.TempDir(), "pins")
	if err := os.WriteFile(pins, []byte("# kept\n"+ref+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startAdminEnv(t, up, "--pin-file", pins)
	// The pins are applied in the background; the first pass logs this
	// once it has fetched every blob.
	ctx, cancel := context.WithTimeout(t.Context(), daemontest.ReadyTimeout)
	defer cancel()
	if err := e.d.WaitOutput(ctx, `"msg":"pins applied"`); err != nil {
		t.Fatalf("%v%s", err, e.d.Tail())
	}
	v, ok := find(e.images(t), ref)
	if !ok || !v.Pinned || v.Missing != 0 {
		t.Fatalf("after the first pass the pinned image is not pinned and whole: %+v\n%s", v, e.d.Tail())
	}
	if v.Digest != img.Manifests["linux/amd64"] {
		t.Fatalf("pinned image %s, want %s", v.Digest, img.Manifests["linux/amd64"])
	}
	resp, err := http.Get("http://" + e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "\nnodecache_pin_images 1\n") || !strings.Contains(string(metrics), "\nnodecache_pins_over_max_size 0\n") {
		t.Errorf("/metrics lacks the pin metrics:\n%s", metrics)
	}
	out, code := e.run(t, "evict", "--admin", e.admin, ref)
	if code == 0 || !strings.Contains(out, "pinned") {
		t.Fatalf("evict of a pinned image: exit %d\n%s", code, out)
	}
	if _, code := e.run(t, "prefetch", "--mirror", e.d.Addr, "--admin", e.admin, ref); code != 0 {
		t.Fatal("prefetch of a pinned image failed")
	}
}

// TestClientUsageErrors: the client commands name the flag or argument
// that is wrong, in one line, with exit 2.
func TestClientUsageErrors(t *testing.T) {
	t.Setenv("NODECACHE_METRICS_LISTEN", "")
	for _, args := range [][]string{
		{"ls"},
		{"ls", "--admin", "ftp://x"},
		{"evict", "--admin", "127.0.0.1:1"},
		{"evict", "--admin", "127.0.0.1:1", "Not/A/Ref"},
		{"prefetch", "--admin", "127.0.0.1:1"},
		{"prefetch", "--admin", "127.0.0.1:1", "--platform", "linux/x/y/z", "nginx"},
		{"prefetch", "nginx"},
	} {
		err := dispatch(context.Background(), args, io.Discard, io.Discard)
		if exitOf(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v (exit %d), want a one-line usage error", args, err, exitOf(err))
		}
	}
}
