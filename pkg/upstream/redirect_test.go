package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"nodecache/internal/ociref"
)

const testDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

func blobRequest(repo string) Request {
	return Request{Registry: testRegistry, Repo: repo, Kind: ociref.KindBlobs, Ref: testDigest, Method: http.MethodGet}
}

// TestRedirectAuthorization sends a blob GET through a token-protected
// registry that redirects. net/http alone would forward the token to
// 127.0.0.1 on another port, since it compares host names without ports.
func TestRedirectAuthorization(t *testing.T) {
	tests := []struct {
		name     string
		sameHost bool
		wantAuth string
	}{
		{"other port loses Authorization", false, ""},
		{"same origin keeps Authorization", true, "Bearer tok-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cdnHandler := &okHandler{}
			cdn := httptest.NewServer(cdnHandler)
			t.Cleanup(cdn.Close)
			rl := newRealm(t, nil)
			reg := newBearerRegistry(t, rl.srv.URL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/same-origin-cdn" {
					cdnHandler.ServeHTTP(w, r)
					return
				}
				target := cdn.URL + "/cdn/blob"
				if tt.sameHost {
					target = "/same-origin-cdn"
				}
				http.Redirect(w, r, target, http.StatusTemporaryRedirect)
			}))
			c := newTestClient(t, reg.srv.URL)

			resp, err := c.Do(testCtx(t), blobRequest("x/y"))
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			discard(resp)
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, body)
			}
			last := cdnHandler.lastRequest()
			if got := last.Header.Get("Authorization"); got != tt.wantAuth {
				t.Errorf("redirect target saw Authorization %q, want %q", got, tt.wantAuth)
			}
		})
	}
}

func TestRedirectLoopStops(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL)
	_, err := c.Do(testCtx(t), blobRequest("x/y"))
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, errTooManyRedirects) {
		t.Fatalf("err = %v, want ErrUnreachable wrapping too many redirects", err)
	}
	if n := hits.Load(); n != maxRedirects {
		t.Errorf("hits = %d, want %d", n, maxRedirects)
	}
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://r.example/v2/", "https://r.example:443/x", true},
		{"https://R.example/", "https://r.example/", true},
		{"http://127.0.0.1:5000/", "http://127.0.0.1:5001/", false},
		{"https://r.example/", "https://cdn.r.example/", false},
		{"https://r.example/", "http://r.example/", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			a, b := mustParse(t, tt.a), mustParse(t, tt.b)
			if got := sameOrigin(a, b); got != tt.want {
				t.Errorf("sameOrigin = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestChallengeFromRedirectTargetIgnored: only the registry may name the
// realm a token request (and, later, credentials) goes to.
func TestChallengeFromRedirectTargetIgnored(t *testing.T) {
	rl := newRealm(t, nil)
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+rl.srv.URL+`"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(cdn.Close)
	reg := httptest.NewServer(http.RedirectHandler(cdn.URL+"/blob", http.StatusTemporaryRedirect))
	t.Cleanup(reg.Close)
	c := newTestClient(t, reg.URL)
	if got := mustDo(t, c, blobRequest("x/y")); got != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401", got)
	}
	if n := rl.hits.Load(); n != 0 {
		t.Errorf("realm hits = %d, want 0", n)
	}
}
