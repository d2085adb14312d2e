package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// TokenService is the service name the registry announces in its
	// challenge and the audience of the tokens it accepts.
	TokenService = "registrytest"

	// tokenIssuer is the iss claim the registry trusts.
	tokenIssuer = "registrytest-token-server"

	// tokenKeyID names the signing key in the registry's JWKS file.
	tokenKeyID = "registrytest-key"

	// TokenLifetime is the expires_in of every token: the docker token
	// spec's recommended minimum is 60 s; five minutes is what common
	// token servers issue.
	TokenLifetime = 5 * time.Minute
)

// TokenCounts counts the token server's requests by kind.
type TokenCounts struct {
	AnonymousGet  int // GET without credentials
	BasicGet      int // GET with Basic credentials
	PasswordGrant int // POST grant_type=password
	RefreshGrant  int // POST grant_type=refresh_token
	Refused       int // answered 401 or 400: unknown user, wrong password, bad grant
}

// Total is the number of token requests of every kind.
func (c TokenCounts) Total() int {
	return c.AnonymousGet + c.BasicGet + c.PasswordGrant + c.RefreshGrant
}

// tokenServer implements the docker token protocol on 127.0.0.1:
//
//   - GET realm?service=S&scope=SCOPE (scope repeated or space-separated),
//     anonymous or with Basic credentials; offline_token=true with
//     credentials adds a refresh_token;
//   - POST realm with a form: grant_type=password (username, password) or
//     grant_type=refresh_token (refresh_token), plus service, scope and
//     client_id; access_type=offline, or the refresh_token grant, adds a
//     refresh_token.
//
// Each answer is {token, access_token, expires_in, issued_at
// [, refresh_token]}, an ES256 JWT granting the requested actions that the
// rules allow. Wrong credentials get 401.
type tokenServer struct {
	srv   *httptest.Server
	key   *ecdsa.PrivateKey
	users map[string]string
	rules []Rule

	// mu guards counts and refresh (refresh token to user).
	mu      sync.Mutex
	counts  TokenCounts
	refresh map[string]string
}

// grant is the access one token carries for one repository.
type grant struct {
	repo    string
	actions []string
}

func startTokenServer(tb testing.TB, users map[string]string, rules []Rule) *tokenServer {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("registrytest: token key: %v", err)
	}
	ts := &tokenServer{key: key, users: users, rules: rules, refresh: make(map[string]string)}
	ts.srv = httptest.NewUnstartedServer(http.HandlerFunc(ts.serve))
	ts.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.srv.Start()
	tb.Cleanup(ts.srv.Close)
	return ts
}

// realm is the URL the registry's challenges name.
func (ts *tokenServer) realm() string { return ts.srv.URL + "/token" }

// registryParameters writes the public key as a JWKS file and returns the
// registry's "token" auth configuration.
func (ts *tokenServer) registryParameters(tb testing.TB) configuration.Parameters {
	tb.Helper()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &ts.key.PublicKey, KeyID: tokenKeyID, Algorithm: string(jose.ES256), Use: "sig",
	}}}
	b, err := json.Marshal(set)
	if err != nil {
		tb.Fatalf("registrytest: marshal jwks: %v", err)
	}
	file := filepath.Join(tb.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		tb.Fatalf("registrytest: write jwks: %v", err)
	}
	return configuration.Parameters{
		"realm":   ts.realm(),
		"service": TokenService,
		"issuer":  tokenIssuer,
		"jwks":    file,
	}
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		ts.serveGet(w, r)
	case http.MethodPost:
		ts.servePost(w, r)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (ts *tokenServer) serveGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, pass, hasBasic := r.BasicAuth()
	ts.count(func(c *TokenCounts) {
		if hasBasic {
			c.BasicGet++
		} else {
			c.AnonymousGet++
		}
	})
	if hasBasic && !ts.checkPassword(user, pass) {
		ts.refuse(w, http.StatusUnauthorized, "invalid username or password")
		return
	}
	offline := hasBasic && q.Get("offline_token") == "true"
	ts.issue(w, user, q.Get("service"), q["scope"], offline, "")
}

func (ts *tokenServer) servePost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		ts.refuse(w, http.StatusBadRequest, "bad form")
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "password":
		ts.count(func(c *TokenCounts) { c.PasswordGrant++ })
		user := f.Get("username")
		if !ts.checkPassword(user, f.Get("password")) {
			ts.refuse(w, http.StatusUnauthorized, "invalid username or password")
			return
		}
		ts.issue(w, user, f.Get("service"), f["scope"], f.Get("access_type") == "offline", "")
	case "refresh_token":
		ts.count(func(c *TokenCounts) { c.RefreshGrant++ })
		rt := f.Get("refresh_token")
		ts.mu.Lock()
		user, ok := ts.refresh[rt]
		ts.mu.Unlock()
		if !ok {
			ts.refuse(w, http.StatusUnauthorized, "invalid refresh token")
			return
		}
		ts.issue(w, user, f.Get("service"), f["scope"], true, rt)
	default:
		ts.refuse(w, http.StatusBadRequest, "unsupported grant_type")
	}
}

// issue answers with a token for user (Anonymous if ""). With offline, it
// includes refresh, or a new refresh token if refresh is "".
func (ts *tokenServer) issue(w http.ResponseWriter, user, service string, scopes []string, offline bool, refresh string) {
	if service != TokenService {
		ts.refuse(w, http.StatusBadRequest, "unknown service")
		return
	}
	var grants []grant
	for _, s := range scopes {
		for _, one := range strings.Fields(s) {
			repo, actions, ok := parseScope(one)
			if !ok {
				continue
			}
			if got := allowed(ts.rules, user, repo, actions); len(got) > 0 {
				grants = append(grants, grant{repo: repo, actions: got})
			}
		}
	}
	now := time.Now()
	resp := map[string]any{
		"expires_in": int(TokenLifetime / time.Second),
		"issued_at":  now.UTC().Format(time.RFC3339),
	}
	tok := ts.mint(user, grants)
	resp["token"], resp["access_token"] = tok, tok
	if offline && user != Anonymous {
		if refresh == "" {
			refresh = ts.newRefreshToken(user)
		}
		resp["refresh_token"] = refresh
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// parseScope splits "repository:NAME:ACTIONS". NAME may hold a colon (a
// registry port), so the type ends at the first colon and the actions
// start after the last.
func parseScope(s string) (repo string, actions []string, ok bool) {
	typ, rest, ok1 := strings.Cut(s, ":")
	i := strings.LastIndex(rest, ":")
	if !ok1 || typ != "repository" || i <= 0 {
		return "", nil, false
	}
	return rest[:i], strings.Split(rest[i+1:], ","), true
}

// mint signs a JWT for user carrying grants, valid for TokenLifetime.
func (ts *tokenServer) mint(user string, grants []grant) string {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ts.key, KeyID: tokenKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(err) // unreachable: ES256 with a P-256 key
	}
	now := time.Now()
	claims := token.ClaimSet{
		Issuer:   tokenIssuer,
		Subject:  user,
		Audience: token.AudienceList{TokenService},
		// The registry allows a minute of clock skew each way itself.
		Expiration: now.Add(TokenLifetime).Unix(),
		NotBefore:  now.Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      randomID(),
		Access:     []*token.ResourceActions{},
	}
	for _, g := range grants {
		claims.Access = append(claims.Access, &token.ResourceActions{Type: "repository", Name: g.repo, Actions: g.actions})
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		panic(err) // unreachable: the claims always marshal
	}
	return s
}

func (ts *tokenServer) newRefreshToken(user string) string {
	rt := "refresh-" + randomID()
	ts.mu.Lock()
	ts.refresh[rt] = user
	ts.mu.Unlock()
	return rt
}

func (ts *tokenServer) checkPassword(user, pass string) bool {
	want, ok := ts.users[user]
	return ok && user != Anonymous && subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
}

func (ts *tokenServer) refuse(w http.ResponseWriter, code int, msg string) {
	ts.count(func(c *TokenCounts) { c.Refused++ })
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (ts *tokenServer) count(f func(*TokenCounts)) {
	ts.mu.Lock()
	f(&ts.counts)
	ts.mu.Unlock()
}

func randomID() string {
	return rand.Text()
}

// TokenRealm returns the token server's URL, or "" without token auth.
func (r *Registry) TokenRealm() string {
	if r.tokens == nil {
		return ""
	}
	return r.tokens.realm()
}

// TokenRequests returns the token server's request counts (zero without
// token auth).
func (r *Registry) TokenRequests() TokenCounts {
	if r.tokens == nil {
		return TokenCounts{}
	}
	r.tokens.mu.Lock()
	defer r.tokens.mu.Unlock()
	return r.tokens.counts
}

// IdentityToken returns a new refresh token (a Docker config's
// "identitytoken") for user, as a password grant with access_type=offline
// would, without counting a request. It fails the test without token auth
// or for an unknown user.
func (r *Registry) IdentityToken(tb testing.TB, user string) string {
	tb.Helper()
	if r.tokens == nil {
		tb.Fatal("registrytest: IdentityToken needs WithTokenAuth")
	}
	if _, ok := r.tokens.users[user]; !ok || user == Anonymous {
		tb.Fatalf("registrytest: IdentityToken: unknown user %q", user)
	}
	return r.tokens.newRefreshToken(user)
}
