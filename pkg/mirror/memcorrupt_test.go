package mirror

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
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
