package mirror

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
)

func TestBase(t *testing.T) {
	e := newEnv(t, nil)
	resp, _ := e.do(http.MethodGet, e.srv.URL+"/v2/", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %d %q", resp.StatusCode, resp.Header.Get("Docker-Distribution-API-Version"))
	}
}

// TestDisallowedRegistryIsNeverContacted is the SSRF guard: a registry
// outside the allow-list gets a 403 and no connection at all.
func TestDisallowedRegistryIsNeverContacted(t *testing.T) {
	e := newEnv(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan string, 64) // remote addresses, in accept order
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	target := l.Addr().String()
	for _, ns := range []string{target, "169.254.169.254", "evil.example.com", "localhost%3A" + strings.Split(target, ":")[1]} {
		for _, path := range []string{"/v2/x/manifests/latest", "/v2/x/blobs/" + testDigest, "/v2/x/tags/list"} {
			resp, body := e.do(http.MethodGet, e.srv.URL+path+"?ns="+ns, nil)
			wantError(t, resp, body, http.StatusForbidden, ocierr.CodeDenied)
			if !strings.Contains(string(body), "--allow-registry") {
				t.Fatalf("403 does not name the flag: %s", body)
			}
		}
	}
	if n := e.dials.Load(); n != 0 {
		t.Fatalf("the upstream client dialled %d times for disallowed registries", n)
	}
	// Connect ourselves: the listener accepts in order, so any connection
	// nodecache had made would show up before ours.
	c, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if first := <-accepted; first != c.LocalAddr().String() {
		t.Fatalf("the disallowed registry was contacted (from %s)", first)
	}
}

func TestBadInputGetsClearErrors(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodPost, "/v2/x/blobs/uploads/", 405, ocierr.CodeUnsupported},
		{http.MethodPut, "/v2/x/manifests/latest", 405, ocierr.CodeUnsupported},
		{http.MethodPatch, "/v2/x/blobs/uploads/abc", 405, ocierr.CodeUnsupported},
		{http.MethodDelete, "/v2/x/manifests/" + testDigest, 405, ocierr.CodeUnsupported},
		{http.MethodGet, "/v2/_catalog", 405, ocierr.CodeUnsupported},
		{http.MethodGet, "/v2/UPPER/manifests/latest", 400, ocierr.CodeNameInvalid},
		{http.MethodGet, "/v2/a/../b/manifests/latest", 400, ocierr.CodeNameInvalid},
		{http.MethodGet, "/v2/a//b/manifests/latest", 400, ocierr.CodeNameInvalid},
		{http.MethodGet, "/v2/" + strings.Repeat("a", 300) + "/manifests/latest", 400, ocierr.CodeNameInvalid},
		{http.MethodGet, "/v2/x/blobs/sha256:1234", 400, ocierr.CodeDigestInvalid},
		{http.MethodGet, "/v2/x/blobs/sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", 400, ocierr.CodeDigestInvalid},
		{http.MethodGet, "/v2/x/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd", 404, ocierr.CodeNameUnknown},
		{http.MethodGet, "/v2/x/blobs/sha256:..%2e%2e", 400, ocierr.CodeDigestInvalid},
		{http.MethodGet, "/v2/" + strings.Repeat("a/", 20000) + "b/manifests/latest", 400, ocierr.CodeNameInvalid},
		{http.MethodGet, "/nothing", 404, ocierr.CodeNameUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path[:min(len(tt.path), 60)], func(t *testing.T) {
			resp, body := e.do(tt.method, e.url(tt.path), nil)
			wantError(t, resp, body, tt.status, tt.code)
		})
	}
	if n := e.dials.Load(); n != 0 {
		t.Fatalf("bad input caused %d upstream connections", n)
	}
	// Headers beyond the server's limit are refused before reaching us.
	resp, _ := e.do(http.MethodGet, e.url("/v2/"), http.Header{"X-Big": {strings.Repeat("x", 2<<20)}})
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge header: status %d, want 431", resp.StatusCode)
	}
}

func TestUpstreamStatusMapping(t *testing.T) {
	tests := []struct {
		upstreamStatus int
		status         int
		code           string
	}{
		{http.StatusUnauthorized, 401, ocierr.CodeUnauthorized},
		{http.StatusForbidden, 403, ocierr.CodeDenied},
		{http.StatusTooManyRequests, 429, ocierr.CodeTooManyRequests},
		{http.StatusInternalServerError, 502, ocierr.CodeUnavailable},
		{http.StatusServiceUnavailable, 502, ocierr.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.upstreamStatus), func(t *testing.T) {
			e := newEnv(t, []registrytest.Option{registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, "/manifests/") {
					w.WriteHeader(tt.upstreamStatus)
					return true
				}
				return false
			})})
			for _, path := range []string{"/v2/x/blobs/" + testDigest, "/v2/x/manifests/latest"} {
				resp, body := e.do(http.MethodGet, e.url(path), nil)
				wantError(t, resp, body, tt.status, tt.code)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, nil)
		e.up.Close()
		resp, body := e.do(http.MethodGet, e.url("/v2/x/blobs/"+testDigest), nil)
		wantError(t, resp, body, http.StatusServiceUnavailable, ocierr.CodeUnavailable)
		if !strings.Contains(string(body), e.up.Host()) {
			t.Fatalf("error does not name the registry: %s", body)
		}
	})
}

func TestTagsListPassesThrough(t *testing.T) {
	e := newEnv(t, nil)
	e.up.PushImage(t, "test/app", "v1", 10)
	e.up.PushImage(t, "test/app", "v2", 10)
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/tags/list"), nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"v1"`) || !strings.Contains(string(body), `"v2"`) {
		t.Fatalf("tags/list: %d %s", resp.StatusCode, body)
	}
}

// TestErrorAnswerBytes pins the mirror's error answers on the wire: OCI
// error JSON with a "detail" field, null when there is none, its
// Content-Length also on HEAD, and Allow on a 405.
func TestErrorAnswerBytes(t *testing.T) {
	e := newEnv(t, nil)
	resp, body := e.do(http.MethodGet, e.url("/nothing"), nil)
	want := `{"errors":[{"code":"NAME_UNKNOWN","message":"not a registry API path","detail":null}]}`
	if resp.StatusCode != http.StatusNotFound || string(body) != want {
		t.Fatalf("GET: %d %s, want 404 %s", resp.StatusCode, body, want)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Fatalf("GET: Content-Length %s, want %d", cl, len(want))
	}
	resp, body = e.do(http.MethodHead, e.url("/nothing"), nil)
	if resp.StatusCode != http.StatusNotFound || len(body) != 0 || resp.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD: %d, %d bytes, Content-Length %d; want 404, none, %d", resp.StatusCode, len(body), resp.ContentLength, len(want))
	}
	// A pull path, which allows GET and HEAD (uploads allow nothing:
	// TestMethodNotAllowedAllow).
	resp, body = e.do(http.MethodPost, e.url("/v2/x/manifests/latest"), nil)
	want = `{"errors":[{"code":"UNSUPPORTED","message":"POST is not supported by a pull-through mirror","detail":null}]}`
	if resp.StatusCode != http.StatusMethodNotAllowed || string(body) != want || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d %s, Allow %q; want 405 %s, GET, HEAD", resp.StatusCode, body, resp.Header.Get("Allow"), want)
	}
}
