package mirror

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
)

// TestCorruptManifestIsNotServed: a manifest whose file no longer matches
// its digest, found so when it is read to be kept in memory, is neither
// kept nor served: the store removes it, as its scrub would, and the
// client gets upstream's bytes, filled again.
func TestCorruptManifestIsNotServed(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	path := e.url("/v2/test/app/manifests/" + img.Index.String())
	if resp, _ := e.do(http.MethodGet, path, acceptIndex); resp.StatusCode != http.StatusOK { // the fill
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitCommitted(t, e, img.Index)
	hex := img.Index.Encoded()
	file := filepath.Join(e.store.Root(), "blobs", "sha256", hex[:2], hex)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[7] ^= 0xff // a bad disk: same size, other bytes
	if err := os.WriteFile(file, b, 0); err != nil {
		t.Fatal(err)
	}
	gets := e.up.ManifestRequests(http.MethodGet)
	for range 2 { // the first finds the bad file, the second is a hit
		resp, body := e.do(http.MethodGet, path, acceptIndex)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Index {
			t.Fatalf("status %d, body %s; want 200 and %s", resp.StatusCode, digest.FromBytes(body), img.Index)
		}
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != gets+1 {
		t.Errorf("upstream manifest GETs went from %d to %d, want one more (the fill again)", gets, n)
	}
	if st := e.store.Stats(); st.Corrupt != 1 {
		t.Errorf("store counted %d corrupt entries, want 1", st.Corrupt)
	}
}

// TestMemoryHitsWhileTheStoreRemoves: clients GET a manifest kept in
// memory while the store deletes its entry again and again (run with
// -race): every answer is the manifest, from memory, disk or a new fill,
// and once the store has let go of it for good, memory does not answer.
func TestMemoryHitsWhileTheStoreRemoves(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	path := e.url("/v2/test/app/manifests/" + img.Index.String())
	for i := range 2 { // the fill, then the read that copies it into memory
		e.do(http.MethodGet, path, acceptIndex)
		if i == 0 {
			waitCommitted(t, e, img.Index)
		}
	}
	if n, _ := e.mirror.mem.usage(); n != 1 {
		t.Fatalf("%d manifests in memory, want 1", n)
	}
	// Each client now and then asks for a delete, so that removals and
	// rechecks fall among the hits throughout.
	kick := make(chan struct{}, 1)
	deleted := make(chan struct{})
	go func() {
		defer close(deleted)
		for range kick {
			if err := e.store.Delete(img.Index); err != nil {
				t.Error(err)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				if err := getManifest(path, img.Index); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 9 {
					select {
					case kick <- struct{}{}:
					default: // a delete is already asked for
					}
				}
			}
		})
	}
	wg.Wait()
	close(kick)
	<-deleted
	if err := e.store.Delete(img.Index); err != nil {
		t.Fatal(err)
	}
	e.up.SetFault(registrytest.FailWith(http.StatusNotFound, registrytest.Route(http.MethodGet, "manifests")))
	resp, body := e.do(http.MethodGet, path, acceptIndex)
	wantError(t, resp, body, http.StatusNotFound, ocierr.CodeManifestUnknown)
}

// getManifest GETs an index at url and checks that its bytes are want's.
func getManifest(url string, want digest.Digest) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header = acceptIndex.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != want {
		return fmt.Errorf("GET %s: status %d, body %s (%.200s); want 200 and %s", url, resp.StatusCode, digest.FromBytes(body), body, want)
	}
	return nil
}
