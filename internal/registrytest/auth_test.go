package registrytest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// status sends GET path to reg with the given Authorization header ("" for
// none) and returns the status and the challenge.
func status(t *testing.T, reg *Registry, path, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

func TestBasicAuth(t *testing.T) {
	reg := Start(t, WithBasicAuth(map[string]string{"alice": "s3cret"}))
	reg.PushSingleImage(t, "private/app", "v1", 100)
	const path = "/v2/private/app/manifests/v1"
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"anonymous", "", http.StatusUnauthorized},
		{"right password", basicHeader("alice", "s3cret"), http.StatusOK},
		{"wrong password", basicHeader("alice", "nope"), http.StatusUnauthorized},
		{"unknown user", basicHeader("bob", "s3cret"), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, challenge := status(t, reg, path, tt.auth)
			if got != tt.want {
				t.Fatalf("status = %d, want %d", got, tt.want)
			}
			if got == http.StatusUnauthorized && !strings.HasPrefix(challenge, "Basic ") {
				t.Errorf("challenge = %q, want Basic", challenge)
			}
		})
	}
}

// tokenReply is the token server's answer.
type tokenReply struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token"`
}

// getToken asks the realm with GET; user "" is anonymous.
func getToken(t *testing.T, reg *Registry, user, pass, scope string, extra url.Values) (int, tokenReply) {
	t.Helper()
	q := url.Values{"service": {TokenService}, "scope": {scope}}
	for k, v := range extra {
		q[k] = v
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.TokenRealm()+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return tokenExchange(t, req)
}

// postToken asks the realm with an OAuth2 form.
func postToken(t *testing.T, reg *Registry, form url.Values) (int, tokenReply) {
	t.Helper()
	form.Set("service", TokenService)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, reg.TokenRealm(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return tokenExchange(t, req)
}

func tokenExchange(t *testing.T, req *http.Request) (int, tokenReply) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenReply
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
			t.Fatalf("decode token: %v", err)
		}
		if tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn <= 0 || tr.IssuedAt == "" {
			t.Fatalf("incomplete token reply %+v", tr)
		}
	}
	return resp.StatusCode, tr
}

func newTokenRegistry(t *testing.T) *Registry {
	reg := Start(t, WithTokenAuth(
		map[string]string{"alice": "a-pass", "bob": "b-pass"},
		Allow("alice", "private/app"),
		Allow(Anonymous, "public/*"),
	))
	reg.PushSingleImage(t, "private/app", "v1", 100)
	reg.PushSingleImage(t, "public/app", "v1", 100)
	return reg
}

func TestTokenAuthRules(t *testing.T) {
	reg := newTokenRegistry(t)
	tests := []struct {
		name, user, pass, repo string
		want                   int
	}{
		{"anonymous pulls public", "", "", "public/app", http.StatusOK},
		{"anonymous cannot pull private", "", "", "private/app", http.StatusUnauthorized},
		{"alice pulls private", "alice", "a-pass", "private/app", http.StatusOK},
		{"alice pulls public too", "alice", "a-pass", "public/app", http.StatusOK},
		{"bob cannot pull private", "bob", "b-pass", "private/app", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/v2/" + tt.repo + "/manifests/v1"
			code, challenge := status(t, reg, path, "")
			if code != http.StatusUnauthorized || !strings.Contains(challenge, `realm="`+reg.TokenRealm()+`"`) ||
				!strings.Contains(challenge, `service="`+TokenService+`"`) {
				t.Fatalf("unauthenticated: %d %q, want 401 naming the realm and service", code, challenge)
			}
			code, tr := getToken(t, reg, tt.user, tt.pass, "repository:"+tt.repo+":pull", nil)
			if code != http.StatusOK {
				t.Fatalf("token: status %d", code)
			}
			if got, _ := status(t, reg, path, "Bearer "+tr.Token); got != tt.want {
				t.Errorf("with token: status %d, want %d", got, tt.want)
			}
		})
	}
	// Pull only: a token never grants push unless a rule says so.
	_, tr := getToken(t, reg, "alice", "a-pass", "repository:private/app:pull,push", nil)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, reg.URL()+"/v2/private/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+tr.Token)
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("push with a pull rule: status %d, want 401", resp.StatusCode)
	}
}

func TestTokenGrants(t *testing.T) {
	reg := newTokenRegistry(t)
	const scope = "repository:private/app:pull"
	const path = "/v2/private/app/manifests/v1"

	if code, _ := getToken(t, reg, "alice", "wrong", scope, nil); code != http.StatusUnauthorized {
		t.Errorf("GET with a wrong password: %d, want 401", code)
	}
	if code, tr := getToken(t, reg, "alice", "a-pass", scope, nil); code != http.StatusOK || tr.RefreshToken != "" {
		t.Errorf("GET without offline_token: %d, refresh token %q; want 200 and none", code, tr.RefreshToken)
	}
	code, tr := getToken(t, reg, "alice", "a-pass", scope, url.Values{"offline_token": {"true"}})
	if code != http.StatusOK || tr.RefreshToken == "" {
		t.Errorf("GET offline_token: %d, refresh token %q; want 200 and one", code, tr.RefreshToken)
	}

	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"a-pass"}, "scope": {scope}, "client_id": {"test"}}
	if code, tr := postToken(t, reg, form); code != http.StatusOK || tr.RefreshToken != "" {
		t.Errorf("password grant: %d, refresh %q; want 200 and none", code, tr.RefreshToken)
	}
	form.Set("access_type", "offline")
	code, tr = postToken(t, reg, form)
	if code != http.StatusOK || tr.RefreshToken == "" {
		t.Fatalf("offline password grant: %d, refresh %q", code, tr.RefreshToken)
	}
	form.Set("password", "wrong")
	if code, _ := postToken(t, reg, form); code != http.StatusUnauthorized {
		t.Errorf("password grant with a wrong password: %d, want 401", code)
	}

	for _, rt := range []string{tr.RefreshToken, reg.IdentityToken(t, "alice")} {
		code, got := postToken(t, reg, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {scope}})
		if code != http.StatusOK || got.RefreshToken != rt {
			t.Fatalf("refresh grant: %d, refresh %q", code, got.RefreshToken)
		}
		if st, _ := status(t, reg, path, "Bearer "+got.Token); st != http.StatusOK {
			t.Errorf("token from refresh grant: registry says %d", st)
		}
	}
	if code, _ := postToken(t, reg, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"forged"}}); code != http.StatusUnauthorized {
		t.Errorf("unknown refresh token: %d, want 401", code)
	}
	if code, _ := postToken(t, reg, url.Values{"grant_type": {"client_credentials"}}); code != http.StatusBadRequest {
		t.Errorf("unsupported grant: %d, want 400", code)
	}

	want := TokenCounts{BasicGet: 3, PasswordGrant: 3, RefreshGrant: 3, Refused: 4}
	if got := reg.TokenRequests(); got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}

func TestAuthenticatedPushHelpers(t *testing.T) {
	for _, opt := range []Option{WithBasicAuth(nil), WithTokenAuth(nil)} {
		reg := Start(t, opt)
		img := reg.PushImage(t, "team/app", "v1", 1000)
		if len(img.Blobs) == 0 {
			t.Fatal("nothing pushed")
		}
		if c := reg.TokenRequests(); c.Total() != 0 {
			t.Errorf("pushes asked the token server %d times", c.Total())
		}
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		in      string
		repo    string
		actions []string
		ok      bool
	}{
		{"repository:a/b:pull", "a/b", []string{"pull"}, true},
		{"repository:a/b:pull,push", "a/b", []string{"pull", "push"}, true},
		{"repository:localhost:5000/a:pull", "localhost:5000/a", []string{"pull"}, true},
		{"registry:catalog:*", "", nil, false},
		{"repository:pull", "", nil, false},
		{"", "", nil, false},
	}
	for _, tt := range tests {
		repo, actions, ok := parseScope(tt.in)
		if repo != tt.repo || !slices.Equal(actions, tt.actions) || ok != tt.ok {
			t.Errorf("parseScope(%q) = %q %q %v", tt.in, repo, actions, ok)
		}
	}
}

func FuzzParseScope(f *testing.F) {
	f.Add("repository:a/b:pull")
	f.Add("repository:h:1/a:pull,push")
	f.Fuzz(func(t *testing.T, s string) {
		repo, actions, ok := parseScope(s)
		if !ok {
			return
		}
		if "repository:"+repo+":"+strings.Join(actions, ",") != s {
			t.Errorf("parseScope(%q) = %q %q does not rebuild the input", s, repo, actions)
		}
	})
}
