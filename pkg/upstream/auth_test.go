package upstream

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"nodecache/internal/clocktest"
)

func TestTokenFlowScopeAndReuse(t *testing.T) {
	rl := newRealm(t, nil)
	ok := &okHandler{}
	reg := newBearerRegistry(t, rl.srv.URL+"/token", ok)
	c := newTestClient(t, reg.srv.URL, WithUserAgent("nodecache/test"))

	for i := range 2 {
		if got := mustDo(t, c, manifestRequest("team/app", "v1")); got != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i, got)
		}
	}
	if n := rl.hits.Load(); n != 1 {
		t.Errorf("realm hits = %d, want 1 (token reused)", n)
	}
	if n := reg.challenged.Load(); n != 1 {
		t.Errorf("challenges = %d, want 1 (second request sent the cached token)", n)
	}
	tr := rl.lastRequest(t)
	q := tr.URL.Query()
	if got := q["scope"]; len(got) != 1 || got[0] != "repository:team/app:pull" {
		t.Errorf("scope = %q, want [repository:team/app:pull]", got)
	}
	if got := q.Get("service"); got != "fake.test" {
		t.Errorf("service = %q, want fake.test", got)
	}
	if got := tr.Header.Get("User-Agent"); got != "nodecache/test" {
		t.Errorf("token request User-Agent = %q", got)
	}
	if got := ok.lastRequest().Header.Get("Authorization"); got != "Bearer tok-1" {
		t.Errorf("registry saw Authorization %q, want Bearer tok-1", got)
	}
}

func TestTokenScopesAreSeparate(t *testing.T) {
	rl := newRealm(t, nil)
	reg := newBearerRegistry(t, rl.srv.URL, &okHandler{})
	c := newTestClient(t, reg.srv.URL)
	for _, repo := range []string{"a/one", "a/two", "a/one"} {
		if got := mustDo(t, c, manifestRequest(repo, "v1")); got != http.StatusOK {
			t.Fatalf("%s: status %d", repo, got)
		}
	}
	if n := rl.hits.Load(); n != 2 {
		t.Errorf("realm hits = %d, want 2 (one per repository)", n)
	}
}

func TestTokenExpiry(t *testing.T) {
	tests := []struct {
		name     string
		body     string // %d is replaced by the hit number
		advance  time.Duration
		wantHits int64
	}{
		{"default 60s, still fresh", `{"token":"tok-%d"}`, 59 * time.Second, 1},
		{"default 60s, expired", `{"token":"tok-%d"}`, 60 * time.Second, 2},
		{"expires_in honoured, fresh", `{"token":"tok-%d","expires_in":300}`, 299 * time.Second, 1},
		{"expires_in honoured, expired", `{"token":"tok-%d","expires_in":300}`, 301 * time.Second, 2},
		{"access_token field", `{"access_token":"tok-%d","expires_in":300}`, time.Second, 1},
		{"issued_at counts", `{"token":"tok-%d","expires_in":60,"issued_at":"2030-01-02T03:03:35Z"}`, 31 * time.Second, 2},
		{"issued_at in the future is now", `{"token":"tok-%d","expires_in":60,"issued_at":"2031-01-01T00:00:00Z"}`, 61 * time.Second, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := clocktest.New()
			rl := newRealm(t, func(w http.ResponseWriter, _ *http.Request, n int64) {
				fmt.Fprintf(w, tt.body, n)
			})
			reg := newBearerRegistry(t, rl.srv.URL, &okHandler{})
			c := newTestClient(t, reg.srv.URL, WithClock(clock.Now))

			mustDo(t, c, manifestRequest("x/y", "v1"))
			clock.Advance(tt.advance)
			if got := mustDo(t, c, manifestRequest("x/y", "v1")); got != http.StatusOK {
				t.Fatalf("status %d", got)
			}
			if n := rl.hits.Load(); n != tt.wantHits {
				t.Errorf("realm hits = %d, want %d", n, tt.wantHits)
			}
		})
	}
}

// TestConcurrentFirstRequestsShareOneToken holds the realm's answer until
// every request has been challenged, so all of them want a token at once.
func TestConcurrentFirstRequestsShareOneToken(t *testing.T) {
	const n = 8
	allChallenged := make(chan struct{})
	var once sync.Once
	rl := newRealm(t, func(w http.ResponseWriter, r *http.Request, hit int64) {
		select {
		case <-allChallenged:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, `{"token":"tok-%d"}`, hit)
	})
	reg := newBearerRegistry(t, rl.srv.URL, &okHandler{})
	reg.onChallenge = func(got int64) {
		if got == n {
			once.Do(func() { close(allChallenged) })
		}
	}
	c := newTestClient(t, reg.srv.URL)

	ctx := testCtx(t)
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := c.Do(ctx, manifestRequest("x/y", "v1"))
			if err == nil {
				discard(resp)
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if hits := rl.hits.Load(); hits != 1 {
		t.Errorf("realm hits = %d, want 1", hits)
	}
}

func TestRejectedTokenIsRefetchedOnce(t *testing.T) {
	rl := newRealm(t, nil)
	var mu sync.Mutex
	revoked := map[string]bool{}
	ok := &okHandler{}
	reg := newBearerRegistry(t, rl.srv.URL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		bad := revoked[r.Header.Get("Authorization")]
		mu.Unlock()
		if bad {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,error="invalid_token"`, rl.srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ok.ServeHTTP(w, r)
	}))
	c := newTestClient(t, reg.srv.URL)
	mustDo(t, c, manifestRequest("x/y", "v1"))
	mu.Lock()
	revoked["Bearer tok-1"] = true
	mu.Unlock()

	if got := mustDo(t, c, manifestRequest("x/y", "v1")); got != http.StatusOK {
		t.Fatalf("status %d, want 200 after refetch", got)
	}
	if got := ok.lastRequest().Header.Get("Authorization"); got != "Bearer tok-2" {
		t.Errorf("Authorization = %q, want Bearer tok-2", got)
	}
}

func TestChallengeOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		challenge  string // REALM is replaced by the realm URL
		realmReply func(w http.ResponseWriter, r *http.Request, n int64)
		wantStatus int   // when no error
		wantErr    error // when an error
		wantHits   int64
	}{
		{
			name:       "basic without credentials returns the 401",
			challenge:  `Basic realm="reg"`,
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "no challenge returns the 401",
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "token denied returns the 401",
			challenge:  `Bearer realm="REALM",service="s"`,
			realmReply: func(w http.ResponseWriter, _ *http.Request, _ int64) { w.WriteHeader(http.StatusForbidden) },
			wantStatus: http.StatusUnauthorized,
			wantHits:   1,
		},
		{
			name:       "token server error",
			challenge:  `Bearer realm="REALM",service="s"`,
			realmReply: func(w http.ResponseWriter, _ *http.Request, _ int64) { w.WriteHeader(http.StatusBadGateway) },
			wantErr:    ErrAuth,
			wantHits:   1,
		},
		{
			name:       "empty token",
			challenge:  `Bearer realm="REALM"`,
			realmReply: func(w http.ResponseWriter, _ *http.Request, _ int64) { fmt.Fprint(w, `{}`) },
			wantErr:    ErrAuth,
			wantHits:   1,
		},
		{
			name:      "realm not http",
			challenge: `Bearer realm="file:///etc/passwd"`,
			wantErr:   ErrAuth,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := newRealm(t, tt.realmReply)
			reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tt.challenge != "" {
					w.Header().Set("WWW-Authenticate", strings.ReplaceAll(tt.challenge, "REALM", rl.srv.URL))
				}
				w.WriteHeader(http.StatusUnauthorized)
			}))
			t.Cleanup(reg.Close)
			c := newTestClient(t, reg.URL)

			resp, err := c.Do(testCtx(t), manifestRequest("x/y", "v1"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Do: %v", err)
			} else {
				discard(resp)
				if resp.StatusCode != tt.wantStatus {
					t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
				}
			}
			if n := rl.hits.Load(); n != tt.wantHits {
				t.Errorf("realm hits = %d, want %d", n, tt.wantHits)
			}
		})
	}
}
