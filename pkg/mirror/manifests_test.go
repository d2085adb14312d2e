package mirror

import (
	"nodecache/internal/ocierr"

	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var acceptIndex = http.Header{"Accept": {ocispec.MediaTypeImageIndex + ", " + ocispec.MediaTypeImageManifest}}

func TestManifestHeaders(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "team/sub/app", "v1", 1000)
	idx := img.Blobs[img.Index]
	for _, ref := range []string{"v1", img.Index.String()} {
		for _, method := range []string{http.MethodHead, http.MethodGet, http.MethodGet} {
			t.Run(method+" "+ref, func(t *testing.T) {
				resp, body := e.do(method, e.url("/v2/team/sub/app/manifests/"+ref), acceptIndex)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
					t.Errorf("Content-Type %q, want %q", ct, ocispec.MediaTypeImageIndex)
				}
				if dg := resp.Header.Get("Docker-Content-Digest"); dg != img.Index.String() {
					t.Errorf("Docker-Content-Digest %q, want %s", dg, img.Index)
				}
				if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(idx)) {
					t.Errorf("Content-Length %q, want %d", cl, len(idx))
				}
				if method == http.MethodGet && digest.FromBytes(body) != img.Index {
					t.Errorf("body digest %s, want %s", digest.FromBytes(body), img.Index)
				}
			})
		}
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Fatalf("upstream manifest GETs = %d, want 1 (the rest from the store)", n)
	}
}

// TestAcceptSeparatesAnswers: a client that accepts only single-platform
// manifests must not get an index the store holds, and tag answers are
// cached per set of accepted types.
func TestAcceptSeparatesAnswers(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 100)
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), acceptIndex)
	heads, gets := e.up.ManifestRequests(http.MethodHead), e.up.ManifestRequests(http.MethodGet)

	only := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), only)
	if n := e.up.ManifestRequests(http.MethodHead); n != heads+1 {
		t.Fatalf("a different Accept reused another Accept's tag answer (%d HEADs, want %d)", n, heads+1)
	}
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), only)
	if n := e.up.ManifestRequests(http.MethodGet); n <= gets {
		t.Fatal("a stored index was served to a client that does not accept indexes")
	}
	// A wildcard accepts what is stored.
	gets = e.up.ManifestRequests(http.MethodGet)
	resp, _ := e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), http.Header{"Accept": {"*/*"}})
	if resp.StatusCode != 200 || e.up.ManifestRequests(http.MethodGet) != gets {
		t.Fatalf("wildcard Accept: status %d, went upstream: %v", resp.StatusCode, e.up.ManifestRequests(http.MethodGet) != gets)
	}
}

func TestManifestUnknown(t *testing.T) {
	e := newEnv(t, nil)
	e.up.PushImage(t, "test/app", "v1", 100)
	for _, ref := range []string{"nope", digest.FromString("nope").String()} {
		resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+ref), acceptIndex)
		wantError(t, resp, body, http.StatusNotFound, ocierr.CodeManifestUnknown)
	}
}

// TestRelayedManifestIsVerified: a manifest answered from upstream without
// caching is still checked against its digest.
func TestRelayedManifestIsVerified(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 100)
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex) // stored as an index
	body := img.Blobs[img.Index]
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, img.Index.String()) {
			return false
		}
		lie := append([]byte(nil), body...)
		lie[len(lie)-2] ^= 1
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Header().Set("Content-Length", strconv.Itoa(len(lie)))
		w.Write(lie)
		return true
	})
	resp, err := http.DefaultClient.Do(mustRequest(t, e.url("/v2/test/app/manifests/"+img.Index.String()),
		http.Header{"Accept": {ocispec.MediaTypeImageManifest}}))
	if err != nil {
		return // aborted before the headers were even sent: no answer at all
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a relayed manifest that fails its digest was delivered whole (%d bytes)", len(got))
	}
}

func mustRequest(t *testing.T, url string, h http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	return req
}
