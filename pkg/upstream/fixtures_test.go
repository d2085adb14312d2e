package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/ociref"
)

// testRegistry is the registry name tests resolve to their fake servers.
const testRegistry = "reg.test"

// testCtx bounds a test's calls so a bug shows as a failure, not a hang.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// realm is a fake token server issuing "tok-<n>" for its n-th request.
type realm struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu       sync.Mutex // guards requests
	requests []*http.Request
}

// newRealm starts a realm; reply, if not nil, writes the response for the
// n-th hit instead of the default 60 s token.
func newRealm(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, n int64)) *realm {
	t.Helper()
	rl := &realm{}
	rl.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rl.hits.Add(1)
		rl.mu.Lock()
		rl.requests = append(rl.requests, r.Clone(context.Background()))
		rl.mu.Unlock()
		if reply != nil {
			reply(w, r, n)
			return
		}
		fmt.Fprintf(w, `{"token":"tok-%d","expires_in":60}`, n)
	}))
	t.Cleanup(rl.srv.Close)
	return rl
}

func (rl *realm) lastRequest(t *testing.T) *http.Request {
	t.Helper()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if len(rl.requests) == 0 {
		t.Fatal("realm was never asked for a token")
	}
	return rl.requests[len(rl.requests)-1]
}

// bearerRegistry answers 401 with a Bearer challenge naming realmURL unless
// the request carries a "tok-" token, and passes authorized requests to
// next. It counts the challenges it sends.
type bearerRegistry struct {
	srv         *httptest.Server
	challenged  atomic.Int64
	onChallenge func(n int64) // optional, called after counting
}

func newBearerRegistry(t *testing.T, realmURL string, next http.Handler) *bearerRegistry {
	t.Helper()
	br := &bearerRegistry{}
	br.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok-") {
			next.ServeHTTP(w, r)
			return
		}
		repo := repoFromPath(r.URL.Path)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer realm=%q,service="fake.test",scope="repository:%s:pull"`, realmURL, repo))
		w.WriteHeader(http.StatusUnauthorized)
		n := br.challenged.Add(1)
		if br.onChallenge != nil {
			br.onChallenge(n)
		}
	}))
	t.Cleanup(br.srv.Close)
	return br
}

// repoFromPath extracts <repo> from /v2/<repo>/<kind>/<ref>.
func repoFromPath(p string) string {
	p = strings.TrimPrefix(p, "/v2/")
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.Index(p, kind); i >= 0 {
			return p[:i]
		}
	}
	return p
}

// okHandler answers 200 with body "ok" and records the last request.
type okHandler struct {
	mu   sync.Mutex // guards last
	last *http.Request
}

func (h *okHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.last = r.Clone(context.Background())
	h.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

func (h *okHandler) lastRequest() *http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// sleeps records the retry waits a client asked for and returns at once,
// so tests never wait real seconds.
type sleeps struct {
	mu    sync.Mutex // guards waits
	waits []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// newTestClient returns a client for testRegistry at registryURL that does
// not sleep between retries (opts may override that).
func newTestClient(t *testing.T, registryURL string, opts ...Option) *Client {
	t.Helper()
	opts = append([]Option{WithSleep(new(sleeps).sleep)}, opts...)
	c, err := New(map[string]string{testRegistry: registryURL}, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func manifestRequest(repo, ref string) Request {
	return Request{Registry: testRegistry, Repo: repo, Kind: ociref.KindManifests, Ref: ref, Method: http.MethodGet}
}

// mustDo runs r and returns the status, closing the body.
func mustDo(t *testing.T, c *Client, r Request) int {
	t.Helper()
	resp, err := c.Do(testCtx(t), r)
	if err != nil {
		t.Fatalf("Do(%+v): %v", r, err)
	}
	discard(resp)
	return resp.StatusCode
}
