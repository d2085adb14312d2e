package mirror

import (
	"bytes"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestTagByGetWhenHeadHasNoDigest: a registry that sends no
// Docker-Content-Digest on HEAD still has its tags resolved, by one GET
// for all the clients that ask at once. The manifest that GET brought is
// stored once, through the fill path, and the requests by digest that
// follow are served from the store without asking upstream again.
func TestTagByGetWhenHeadHasNoDigest(t *testing.T) {
	var commits atomic.Int32
	countCommits := diskstore.WithStepHook(func(st diskstore.Step) {
		if st == diskstore.StepRenamed {
			commits.Add(1)
		}
	})
	e := newEnvStore(t, []diskstore.Option{countCommits}, []registrytest.Option{registrytest.WithoutHeadDigest()})
	img := e.up.PushImage(t, "test/app", "v1", 100)
	want := img.Blobs[img.Index]

	const clients = 8
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), acceptIndex)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Errorf("by tag: status %d, %d bytes; want 200 and the index", resp.StatusCode, len(body))
			}
			if dg := resp.Header.Get("Docker-Content-Digest"); dg != img.Index.String() {
				t.Errorf("by tag: Docker-Content-Digest %q, want %s", dg, img.Index)
			}
		})
	}
	wg.Wait()
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Fatalf("upstream manifest GETs = %d, want 1", n)
	}
	info, err := e.store.Stat(img.Index)
	if err != nil || info.MediaType != img.IndexMediaType {
		t.Fatalf("store: %+v, %v; want the index with its media type", info, err)
	}

	for _, method := range []string{http.MethodHead, http.MethodGet} {
		resp, body := e.do(method, e.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s by digest: status %d", method, resp.StatusCode)
		}
		if method == http.MethodGet && !bytes.Equal(body, want) {
			t.Fatalf("GET by digest: %d bytes, want the index", len(body))
		}
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Fatalf("upstream manifest GETs = %d after the requests by digest, want still 1", n)
	}
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d commits, want the manifest stored once", n)
	}
}
