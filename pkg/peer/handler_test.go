package peer

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/ocierr"
)

// call is one ServePeer call.
type call struct {
	registry, repo string
	digest         digest.Digest
	rangeHdr       string
	peerHdr        bool
}

// testFetcher serves blob from memory, as the mirror would from its store.
type testFetcher struct {
	blob        []byte
	ignoreRange bool // answer 200 with everything, as for uncached content
	status      int  // if not 0, answer this instead

	mu    sync.Mutex
	calls []call
}

func (f *testFetcher) ServePeer(w http.ResponseWriter, r *http.Request, registry, repo string, d digest.Digest) {
	f.mu.Lock()
	f.calls = append(f.calls, call{registry, repo, d, r.Header.Get("Range"), IsPeerRequest(r)})
	f.mu.Unlock()
	if f.status != 0 {
		ocierr.Write(w, r, &ocierr.Error{Status: f.status, Code: ocierr.CodeBlobUnknown, Message: "test"})
		return
	}
	if f.ignoreRange {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", zeroTime, bytes.NewReader(f.blob))
}

func (f *testFetcher) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func TestHandler(t *testing.T) {
	secret, err := LoadSecret(writeSecret(t, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := LoadSecret(writeSecret(t, otherSecret))
	f := &testFetcher{blob: []byte("layer bytes")}
	allowed := func(r string) bool { return r == "docker.io" || r == "ghcr.io" }
	h := NewHandler(secret, allowed, f)
	srv := httptest.NewServer(h)
	defer srv.Close()
	d := digest.FromBytes(f.blob)
	good := "/peer/v1/blobs/" + d.String() + "?ns=docker.io&repo=library/alpine"

	for _, tc := range []struct {
		name   string
		method string
		target string
		signer *Secret // nil: unsigned
		status int
		code   string
	}{
		{"unsigned", "GET", good, nil, 401, "UNAUTHORIZED"},
		{"unsigned bad path", "GET", "/v2/", nil, 401, "UNAUTHORIZED"},
		{"other secret", "GET", good, other, 401, "UNAUTHORIZED"},
		{"post", "POST", good, secret, 405, "UNSUPPORTED"},
		{"other path", "GET", "/v2/library/alpine/blobs/" + d.String(), secret, 404, "UNSUPPORTED"},
		{"bad digest", "GET", "/peer/v1/blobs/sha256:xyz?ns=docker.io&repo=a", secret, 400, "DIGEST_INVALID"},
		{"no repo", "GET", "/peer/v1/blobs/" + d.String() + "?ns=docker.io", secret, 400, "NAME_INVALID"},
		{"bad repo", "GET", "/peer/v1/blobs/" + d.String() + "?ns=docker.io&repo=../etc", secret, 400, "NAME_INVALID"},
		{"registry not allowed", "GET", "/peer/v1/blobs/" + d.String() + "?ns=evil.example&repo=a", secret, 403, "DENIED"},
		{"no registry", "GET", "/peer/v1/blobs/" + d.String() + "?repo=a", secret, 403, "DENIED"},
		{"get", "GET", good, secret, 200, ""},
		{"head", "HEAD", "/peer/v1/blobs/" + d.String() + "?ns=GHCR.io&repo=a/b/c", secret, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.Calls())
			req, _ := http.NewRequest(tc.method, srv.URL+tc.target, nil)
			if tc.signer != nil {
				tc.signer.Sign(req)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			calls := f.Calls()[before:]
			if tc.code == "" {
				if len(calls) != 1 {
					t.Fatalf("%d Fetcher calls, want 1", len(calls))
				}
				return
			}
			if len(calls) != 0 {
				t.Errorf("a refused request reached the Fetcher: %+v", calls)
			}
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code || e.Errors[0].Message == "" {
				t.Errorf("body %s, want OCI error JSON with code %s", body, tc.code)
			}
		})
	}
	calls := f.Calls()
	want := []call{
		{"docker.io", "library/alpine", d, "", true},
		{"ghcr.io", "a/b/c", d, "", true},
	}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Errorf("Fetcher calls %+v, want %+v", calls, want)
	}
	for result, want := range map[string]float64{servedResult: 2, unauthorizedResult: 3, deniedResult: 2, invalidResult: 5} {
		if got := testutil.ToFloat64(h.requests.WithLabelValues(result)); got != want {
			t.Errorf("requests{result=%q} = %v, want %v", result, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(newRegistry(t, h), "nodecache_peer_requests_total"); err != nil || n != 4 {
		t.Errorf("nodecache_peer_requests_total series: %d, %v; want 4", n, err)
	}
	if !strings.HasPrefix(good, blobsPath) {
		t.Fatal("test route does not match the handler's")
	}
}

// TestHandlerErrorBytes pins the peer API's error answers on the wire:
// OCI error JSON without a "detail" field, its Content-Length also on
// HEAD, and Allow on a 405.
func TestHandlerErrorBytes(t *testing.T) {
	secret, err := LoadSecret(writeSecret(t, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(secret, func(string) bool { return true }, &testFetcher{}))
	defer srv.Close()
	for _, tc := range []struct {
		method string
		signed bool
		status int
		body   string
		allow  string
	}{
		{http.MethodGet, false, 401, `{"errors":[{"code":"UNAUTHORIZED","message":"peer request not authenticated"}]}`, ""},
		{http.MethodHead, false, 401, "", ""},
		{http.MethodPost, true, 405, `{"errors":[{"code":"UNSUPPORTED","message":"POST is not supported by the peer API"}]}`, "GET, HEAD"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+"/peer/v1/blobs/sha256:x", nil)
		if tc.signed {
			secret.Sign(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s: %d %s, Allow %q; want %d %s, Allow %q", tc.method, resp.StatusCode, body, resp.Header.Get("Allow"), tc.status, tc.body, tc.allow)
		}
		wantLen := len(tc.body)
		if tc.method == http.MethodHead {
			wantLen = len(`{"errors":[{"code":"UNAUTHORIZED","message":"peer request not authenticated"}]}`)
		}
		if resp.ContentLength != int64(wantLen) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Length %d, Content-Type %q; want %d, application/json", tc.method, resp.ContentLength, resp.Header.Get("Content-Type"), wantLen)
		}
	}
}
