package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
	"nodecache/pkg/credentials"
)

// mapSource is a credentials.Source backed by a map.
type mapSource map[string]credentials.Auth

func (m mapSource) Lookup(registry string) (credentials.Auth, bool) {
	a, ok := m[registry]
	return a, ok
}

func basic(user, pass string) credentials.Auth {
	return credentials.Auth{Username: user, Password: pass}
}

// fetchBlob GETs blob d of repo with auth and returns the status, the
// source of the credentials used and the body.
func fetchBlob(t *testing.T, c *Client, repo, d string, auth credentials.Auth) (int, AuthSource, []byte) {
	t.Helper()
	r := Request{Registry: testRegistry, Repo: repo, Kind: ociref.KindBlobs, Ref: d, Method: http.MethodGet, Auth: auth}
	resp, err := c.Fetch(testCtx(t), r)
	if err != nil {
		t.Fatalf("Fetch %s: %v", repo, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", repo, err)
	}
	return resp.StatusCode, resp.Auth, body
}

func TestBasicCredentials(t *testing.T) {
	reg := registrytest.Start(t, registrytest.WithBasicAuth(map[string]string{"alice": "a-pass"}))
	data := registrytest.Random(1, 1000)
	d := reg.PushBlob(t, "private/app", data).String()
	tests := []struct {
		name     string
		node     credentials.Source
		auth     credentials.Auth
		want     int
		wantAuth AuthSource
	}{
		{"anonymous gets the 401", nil, credentials.Auth{}, 401, AuthAnonymous},
		{"request credentials", nil, basic("alice", "a-pass"), 200, AuthRequest},
		{"wrong password gets the 401", nil, basic("alice", "nope"), 401, AuthRequest},
		{"node credentials", mapSource{testRegistry: basic("alice", "a-pass")}, credentials.Auth{}, 200, AuthNode},
		{"request wins over node", mapSource{testRegistry: basic("alice", "nope")}, basic("alice", "a-pass"), 200, AuthRequest},
		{"node credentials of another registry unused", mapSource{"other.test": basic("alice", "a-pass")}, credentials.Auth{}, 401, AuthAnonymous},
		{"identity token cannot answer Basic", nil, credentials.Auth{IdentityToken: "x"}, 401, AuthAnonymous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, reg.URL(), WithCredentials(tt.node))
			code, src, body := fetchBlob(t, c, "private/app", d, tt.auth)
			if code != tt.want || src != tt.wantAuth {
				t.Fatalf("got %d with %s, want %d with %s", code, src, tt.want, tt.wantAuth)
			}
			if code == 200 && !bytes.Equal(body, data) {
				t.Error("body differs")
			}
		})
	}
}

func newTokenRegistry(t *testing.T) (*registrytest.Registry, map[string]string) {
	reg := registrytest.Start(t, registrytest.WithTokenAuth(
		map[string]string{"alice": "a-pass", "bob": "b-pass"},
		registrytest.Allow("alice", "private/app"),
		registrytest.Allow(registrytest.Anonymous, "public/*"),
	))
	blobs := map[string]string{
		"private/app": reg.PushBlob(t, "private/app", registrytest.Random(2, 3000)).String(),
		"public/app":  reg.PushBlob(t, "public/app", registrytest.Random(3, 3000)).String(),
	}
	return reg, blobs
}

func TestTokenCredentials(t *testing.T) {
	reg, blobs := newTokenRegistry(t)
	c := newTestClient(t, reg.URL())
	var last registrytest.TokenCounts
	step := func(name, repo string, auth credentials.Auth, want int, wantAuth AuthSource, wantNew registrytest.TokenCounts) {
		t.Helper()
		code, src, _ := fetchBlob(t, c, repo, blobs[repo], auth)
		if code != want || src != wantAuth {
			t.Errorf("%s: got %d with %s, want %d with %s", name, code, src, want, wantAuth)
		}
		now := reg.TokenRequests()
		got := registrytest.TokenCounts{
			AnonymousGet:  now.AnonymousGet - last.AnonymousGet,
			BasicGet:      now.BasicGet - last.BasicGet,
			PasswordGrant: now.PasswordGrant - last.PasswordGrant,
			RefreshGrant:  now.RefreshGrant - last.RefreshGrant,
			Refused:       now.Refused - last.Refused,
		}
		if got != wantNew {
			t.Errorf("%s: token requests %+v, want %+v", name, got, wantNew)
		}
		last = now
	}
	alice := basic("alice", "a-pass")
	step("anonymous public", "public/app", credentials.Auth{}, 200, AuthAnonymous, registrytest.TokenCounts{AnonymousGet: 1})
	step("anonymous public, cached", "public/app", credentials.Auth{}, 200, AuthAnonymous, registrytest.TokenCounts{})
	step("anonymous private", "private/app", credentials.Auth{}, 401, AuthAnonymous, registrytest.TokenCounts{AnonymousGet: 1})
	step("alice private", "private/app", alice, 200, AuthRequest, registrytest.TokenCounts{PasswordGrant: 1})
	step("alice private, cached", "private/app", alice, 200, AuthRequest, registrytest.TokenCounts{})
	// The token alice got is not sent for anyone else.
	step("bob private", "private/app", basic("bob", "b-pass"), 401, AuthRequest, registrytest.TokenCounts{PasswordGrant: 1})
	step("anonymous private again", "private/app", credentials.Auth{}, 401, AuthAnonymous, registrytest.TokenCounts{AnonymousGet: 1})
	step("alice wrong password", "private/app", basic("alice", "wrong"), 401, AuthAnonymous,
		registrytest.TokenCounts{PasswordGrant: 1, BasicGet: 1, Refused: 2})
	step("identity token", "private/app", credentials.Auth{IdentityToken: reg.IdentityToken(t, "alice")}, 200, AuthRequest,
		registrytest.TokenCounts{RefreshGrant: 1})
}

func TestRegistryTokenSentAsIs(t *testing.T) {
	reg, blobs := newTokenRegistry(t)
	// A token minted for alice elsewhere, as a Docker config's
	// "registrytoken" holds.
	pc := newTestClient(t, reg.URL())
	if code, _, _ := fetchBlob(t, pc, "private/app", blobs["private/app"], basic("alice", "a-pass")); code != 200 {
		t.Fatalf("setup: %d", code)
	}
	var tok string
	for _, v := range pc.tokens.tokens.Values() {
		tok = v.value
	}
	before := reg.TokenRequests()

	c := newTestClient(t, reg.URL())
	code, src, _ := fetchBlob(t, c, "private/app", blobs["private/app"], credentials.Auth{RegistryToken: tok})
	if code != 200 || src != AuthRequest {
		t.Errorf("got %d with %s, want 200 with request credentials", code, src)
	}
	if after := reg.TokenRequests(); after != before {
		t.Errorf("token server asked: %+v -> %+v", before, after)
	}
	code, _, _ = fetchBlob(t, c, "private/app", blobs["private/app"], credentials.Auth{RegistryToken: "forged"})
	if code != 401 {
		t.Errorf("forged registry token: %d, want 401", code)
	}
}

// TestPasswordGrantFallsBackToGet: a realm that does not take POST gets
// the credentials as Basic on a GET, as containerd sends them.
func TestPasswordGrantFallsBackToGet(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusUnauthorized} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rl := newRealm(t, func(w http.ResponseWriter, r *http.Request, n int64) {
				if r.Method == http.MethodPost {
					w.WriteHeader(code)
					return
				}
				if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "a-pass" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				fmt.Fprintf(w, `{"token":"tok-%d"}`, n)
			})
			reg := newBearerRegistry(t, rl.srv.URL, &okHandler{})
			c := newTestClient(t, reg.srv.URL)
			r := manifestRequest("x/y", "v1")
			r.Auth = basic("alice", "a-pass")
			if got := mustDo(t, c, r); got != http.StatusOK {
				t.Fatalf("status %d", got)
			}
			if n := rl.hits.Load(); n != 2 {
				t.Errorf("realm hits = %d, want 2 (POST, then GET)", n)
			}
		})
	}
}

// TestErrorsHideSecrets: a failing realm's error names the registry, not
// the credentials.
func TestErrorsHideSecrets(t *testing.T) {
	const secret = "hunter2-secret"
	rl := newRealm(t, func(w http.ResponseWriter, _ *http.Request, _ int64) { w.WriteHeader(http.StatusBadGateway) })
	reg := newBearerRegistry(t, rl.srv.URL, &okHandler{})
	c := newTestClient(t, reg.srv.URL)
	for _, a := range []credentials.Auth{basic("alice", secret), {IdentityToken: secret}} {
		r := manifestRequest("x/y", "v1")
		r.Auth = a
		_, err := c.Do(testCtx(t), r)
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("err = %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v %#v", err, r), secret) {
			t.Errorf("error or request shows the secret: %v", err)
		}
	}
}
