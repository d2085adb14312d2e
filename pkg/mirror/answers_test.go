package mirror

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// TestMalformedTagIsManifestUnknown: registries answer a tag they could
// never hold with 404 MANIFEST_UNKNOWN, and the distribution-spec
// conformance suite checks it; nothing is asked upstream.
func TestMalformedTagIsManifestUnknown(t *testing.T) {
	e := newEnv(t, nil)
	for _, tag := range []string{".INVALID_MANIFEST_NAME", "-bad", strings.Repeat("t", 129)} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := e.do(method, e.url("/v2/x/manifests/"+tag), nil)
			if method == http.MethodHead {
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("HEAD %s: status %d, want 404", tag, resp.StatusCode)
				}
				continue
			}
			wantError(t, resp, body, http.StatusNotFound, ocierr.CodeManifestUnknown)
		}
	}
	if n := e.dials.Load(); n != 0 {
		t.Fatalf("malformed tags caused %d upstream connections", n)
	}
}

// TestPassThroughErrorsMapped: an upstream refusal of a tag list keeps
// its meaning; a 404 there is about the repository, and a 400 is the
// client's fault, not a bad gateway.
func TestPassThroughErrorsMapped(t *testing.T) {
	tests := []struct {
		upstreamStatus int
		path           string
		status         int
		code           string
	}{
		{http.StatusNotFound, "/v2/x/tags/list", 404, ocierr.CodeNameUnknown},
		{http.StatusBadRequest, "/v2/x/tags/list", 400, ""},
		{http.StatusBadRequest, "/v2/x/blobs/" + testDigest, 400, ""},
		{http.StatusBadRequest, "/v2/x/manifests/latest", 400, ""},
		{http.StatusNotFound, "/v2/x/blobs/" + testDigest, 404, ocierr.CodeBlobUnknown},
		{http.StatusNotFound, "/v2/x/manifests/latest", 404, ocierr.CodeManifestUnknown},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.upstreamStatus)+" "+tt.path, func(t *testing.T) {
			e := newEnv(t, []registrytest.Option{registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/v2/" {
					return false
				}
				w.WriteHeader(tt.upstreamStatus)
				return true
			})})
			resp, body := e.do(http.MethodGet, e.url(tt.path), nil)
			if tt.code == "" {
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
				}
				return
			}
			wantError(t, resp, body, tt.status, tt.code)
		})
	}
}

// TestMethodNotAllowedAllow: a 405 lists only the methods the resource
// allows. Pull paths allow GET and HEAD; the catalog and uploads allow
// nothing through a mirror, so their Allow is empty (RFC 9110, 10.2.1).
func TestMethodNotAllowedAllow(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		method, path string
		allow        string
	}{
		{http.MethodPut, "/v2/x/manifests/latest", "GET, HEAD"},
		{http.MethodDelete, "/v2/x/blobs/" + testDigest, "GET, HEAD"},
		{http.MethodGet, "/v2/_catalog", ""},
		{http.MethodHead, "/v2/_catalog", ""},
		{http.MethodGet, "/v2/x/blobs/uploads/abc", ""},
		{http.MethodPost, "/v2/x/blobs/uploads/", ""},
		{http.MethodPatch, "/v2/x/blobs/uploads/abc", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, _ := e.do(tt.method, e.url(tt.path), nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", resp.StatusCode)
			}
			allow, ok := resp.Header["Allow"]
			if !ok {
				t.Fatal("405 without an Allow header")
			}
			if got := strings.Join(allow, ", "); got != tt.allow {
				t.Fatalf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

// TestUnreachableHidesEndpoint: a 503 names the registry the client asked
// for, never the address nodecache dials for it (a hosts.toml mirror or
// an internal endpoint).
func TestUnreachableHidesEndpoint(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	endpoint := dead.URL
	dead.Close()
	client, err := upstream.New(map[string]string{"registry.example": endpoint},
		upstream.WithSleep(func(context.Context, time.Duration) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := New(store, client, WithAllowList([]string{"registry.example"}), WithDefaultRegistry("registry.example"))
	for _, path := range []string{"/v2/x/manifests/latest", "/v2/x/tags/list"} {
		w := httptest.NewRecorder()
		m.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		body := w.Body.String()
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s: status %d, want 503; %s", path, w.Code, body)
		}
		if !strings.Contains(body, "registry.example") {
			t.Fatalf("%s: the error does not name the registry: %s", path, body)
		}
		host := strings.TrimPrefix(dead.URL, "http://")
		if strings.Contains(body, host) || strings.Contains(body, "http://") {
			t.Fatalf("%s: the error shows the upstream endpoint: %s", path, body)
		}
	}
}

// TestTooManyRequestsCarriesRetryAfter: a 429 tells the client when to
// come back: upstream's Retry-After, bounded, or DefaultRetryAfter.
func TestTooManyRequestsCarriesRetryAfter(t *testing.T) {
	tests := []struct {
		name, upstream, want string
	}{
		{"passed", "7", "7"},
		{"bounded", "86400", strconvSeconds(MaxRetryAfter)},
		{"default when absent", "", strconvSeconds(DefaultRetryAfter)},
		{"default when unparsable", "soon", strconvSeconds(DefaultRetryAfter)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fault := func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/v2/" {
					return false
				}
				if tt.upstream != "" {
					w.Header().Set("Retry-After", tt.upstream)
				}
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			}
			store, err := diskstore.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			e := newEnvClient(t, store, []registrytest.Option{registrytest.WithFault(fault)},
				[]upstream.Option{upstream.WithSleep(func(context.Context, time.Duration) error { return nil })})
			for _, path := range []string{"/v2/x/blobs/" + testDigest, "/v2/x/manifests/latest", "/v2/x/tags/list"} {
				resp, body := e.do(http.MethodGet, e.url(path), nil)
				wantError(t, resp, body, http.StatusTooManyRequests, ocierr.CodeTooManyRequests)
				if got := resp.Header.Get("Retry-After"); got != tt.want {
					t.Fatalf("%s: Retry-After %q, want %q", path, got, tt.want)
				}
			}
		})
	}
}

func strconvSeconds(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
