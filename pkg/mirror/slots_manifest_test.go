package mirror

import (
	"context"
	"net/http"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

// TestManifestFillsTakeNoSlot: with room for one fill, held by a stalled
// layer download, a manifest asked for by tag and one asked for by digest
// are both answered: a manifest fill is small and bounded, and must not
// queue behind layers past the client's timeout.
func TestManifestFillsTakeNoSlot(t *testing.T) {
	e := newEnv(t, nil, WithMaxConcurrentFills(1))
	t.Cleanup(e.mirror.Close) // ends the stalled fill before its directory goes
	gate := registrytest.NewGate()
	e.up.SetFault(e.up.Stall(1<<10, gate, registrytest.Route(http.MethodGet, string(ociref.KindBlobs))))
	layer := registrytest.Random(91, 1<<20)
	dl := e.up.PushBlob(t, "test/app", layer)
	e.up.PushSingleImage(t, "test/app", "v1", 1<<10)
	byDigest := e.up.PushSingleImage(t, "test/other", "v2", 1<<10)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url("/v2/test/app/blobs/"+dl.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := gate.WaitHeld(ctx, 1); err != nil {
		t.Fatalf("the layer download never stalled: %v", err)
	}

	accept := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	for _, path := range []string{
		"/v2/test/app/manifests/v1",
		"/v2/test/other/manifests/" + byDigest.Manifests["linux/amd64"].String(),
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = accept
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s was not answered while a layer held the only fill slot: %v", path, err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, r.StatusCode)
		}
	}
}
