package upstream

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"nodecache/internal/ociref"
)

func TestNewRejectsBadEndpoints(t *testing.T) {
	tests := []struct {
		name, registry, url string
		wantErr             error
	}{
		{"ftp scheme", "r.example", "ftp://r.example", ErrInvalidEndpoint},
		{"no scheme", "r.example", "r.example:5000", ErrInvalidEndpoint},
		{"no host", "r.example", "https://", ErrInvalidEndpoint},
		{"query", "r.example", "https://r.example?x=1", ErrInvalidEndpoint},
		{"empty query", "r.example", "https://r.example?", ErrInvalidEndpoint},
		{"fragment", "r.example", "https://r.example#x", ErrInvalidEndpoint},
		{"user info", "r.example", "https://u:p@r.example", ErrInvalidEndpoint},
		{"path", "r.example", "https://r.example/v2", ErrInvalidEndpoint},
		{"bad port", "r.example", "https://r.example:http", ErrInvalidEndpoint},
		{"name with path", "r.example/x", "https://r.example", ErrInvalidRegistry},
		{"empty name", "", "https://r.example", ErrInvalidRegistry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(map[string]string{tt.registry: tt.url})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.registry+"="+tt.url) {
				t.Errorf("error %q does not name the entry", err)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	c, err := New(map[string]string{
		"localhost:5000": "http://127.0.0.1:5000",
		"mirror.example": "https://mirror.example:8443/",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		registry, want string
		wantErr        error
	}{
		{"docker.io", "https://registry-1.docker.io", nil},
		{"ghcr.io", "https://ghcr.io", nil},
		{"registry.example:5000", "https://registry.example:5000", nil},
		{"[::1]:5000", "https://[::1]:5000", nil},
		{"localhost:5000", "http://127.0.0.1:5000", nil},
		{"mirror.example", "https://mirror.example:8443", nil},
		{"", "", ErrInvalidRegistry},
		{"evil.example/path", "", ErrInvalidRegistry},
		{"user@evil.example", "", ErrInvalidRegistry},
		{"evil.example?x=1", "", ErrInvalidRegistry},
		{"evil.example#x", "", ErrInvalidRegistry},
		{"evil.example:port", "", ErrInvalidRegistry},
	}
	for _, tt := range tests {
		t.Run(tt.registry, func(t *testing.T) {
			u, err := c.Endpoint(tt.registry)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tt.want {
				t.Errorf("Endpoint = %s, want %s", u, tt.want)
			}
		})
	}
}

func TestEndpointReturnsCopy(t *testing.T) {
	c, err := New(map[string]string{"r.example": "https://r.example"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := c.Endpoint("r.example")
	u.Host = "evil.example"
	if u2, _ := c.Endpoint("r.example"); u2.Host != "r.example" {
		t.Errorf("caller changed the client's endpoint to %s", u2)
	}
}

func TestRequestPath(t *testing.T) {
	tests := []struct {
		name string
		r    Request
		want string // path?query the server sees
	}{
		{"docker hub official image", Request{Registry: "docker.io", Repo: "nginx", Kind: ociref.KindManifests, Ref: "latest"}, "/v2/library/nginx/manifests/latest"},
		{"docker hub user image", Request{Registry: "docker.io", Repo: "bitnami/redis", Kind: ociref.KindManifests, Ref: "7"}, "/v2/bitnami/redis/manifests/7"},
		{"other registry single component", Request{Registry: testRegistry, Repo: "nginx", Kind: ociref.KindManifests, Ref: "latest"}, "/v2/nginx/manifests/latest"},
		{"blob", Request{Registry: testRegistry, Repo: "a/b", Kind: ociref.KindBlobs, Ref: testDigest}, "/v2/a/b/blobs/" + testDigest},
		{"tags list paginated", Request{Registry: "docker.io", Repo: "alpine", Kind: ociref.KindTags, RawQuery: "n=10&last=3.19"}, "/v2/library/alpine/tags/list?n=10&last=3.19"},
		{"referrers", Request{Registry: testRegistry, Repo: "a/b", Kind: ociref.KindReferrers, Ref: testDigest, RawQuery: "artifactType=x%2Fy"}, "/v2/a/b/referrers/" + testDigest + "?artifactType=x%2Fy"},
	}
	h := &okHandler{}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(map[string]string{"docker.io": srv.URL, testRegistry: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Method = http.MethodGet
			mustDo(t, c, tt.r)
			if got := h.lastRequest().URL.RequestURI(); got != tt.want {
				t.Errorf("server saw %s, want %s", got, tt.want)
			}
		})
	}
}

func TestInvalidRequests(t *testing.T) {
	good := Request{Registry: testRegistry, Repo: "a/b", Kind: ociref.KindManifests, Ref: "v1", Method: http.MethodGet}
	tests := []struct {
		name   string
		modify func(*Request)
	}{
		{"dot-dot repo", func(r *Request) { r.Repo = "a/../../b" }},
		{"uppercase repo", func(r *Request) { r.Repo = "A/b" }},
		{"empty repo", func(r *Request) { r.Repo = "" }},
		{"long repo", func(r *Request) { r.Repo = strings.Repeat("a", 256) }},
		{"unknown kind", func(r *Request) { r.Kind = "uploads" }},
		{"blob by tag", func(r *Request) { r.Kind = ociref.KindBlobs }},
		{"referrers by tag", func(r *Request) { r.Kind = ociref.KindReferrers }},
		{"tags with ref", func(r *Request) { r.Kind = ociref.KindTags }},
		{"tag with slash", func(r *Request) { r.Ref = "v1/../x" }},
		{"bad digest", func(r *Request) { r.Ref = "sha256:xyz" }},
		{"POST", func(r *Request) { r.Method = http.MethodPost }},
		{"bad query", func(r *Request) { r.RawQuery = "%zz" }},
		{"bad registry", func(r *Request) { r.Registry = "a/b" }},
	}
	c := newTestClient(t, "http://"+closedAddr(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.modify(&r)
			_, err := c.Do(testCtx(t), r)
			if !errors.Is(err, ErrInvalidRequest) && !errors.Is(err, ErrInvalidRegistry) {
				t.Fatalf("err = %v, want ErrInvalidRequest or ErrInvalidRegistry", err)
			}
		})
	}
}
