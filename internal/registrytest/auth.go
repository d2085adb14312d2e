package registrytest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // registers the "htpasswd" access controller
	_ "github.com/distribution/distribution/v3/registry/auth/token"    // registers the "token" access controller
	"golang.org/x/crypto/bcrypt"
)

const (
	// adminUser is the account the push helpers use on an authenticated
	// registry. Its password is random per registry, so a test cannot
	// depend on it by accident.
	adminUser = "registrytest-admin"

	// basicRealm is the realm of the htpasswd challenge.
	basicRealm = "registrytest"
)

// Anonymous is the user name of rules that apply to requests without
// credentials; they apply to every authenticated user too.
const Anonymous = ""

// Rule lets User perform Actions ("pull", "push") on the repositories
// matching Repo, a path.Match pattern such as "private/app" or "public/*".
type Rule struct {
	User    string
	Repo    string
	Actions []string
}

// Allow returns a Rule; with no actions it allows "pull".
func Allow(user, repo string, actions ...string) Rule {
	if len(actions) == 0 {
		actions = []string{"pull"}
	}
	return Rule{User: user, Repo: repo, Actions: actions}
}

// authMode is how the registry authenticates clients.
type authMode int

const (
	authNone authMode = iota
	authBasic
	authToken
)

// WithBasicAuth makes the registry require HTTP Basic credentials from an
// htpasswd file holding users (name to password). As in distribution, any
// authenticated user may do anything and anonymous requests get 401.
func WithBasicAuth(users map[string]string) Option {
	return func(r *Registry) {
		r.authMode = authBasic
		r.users = copyUsers(users)
	}
}

// WithTokenAuth makes the registry require bearer tokens from an
// in-process token server that knows users (name to password) and grants
// what rules allow. See TokenServer for the protocol.
func WithTokenAuth(users map[string]string, rules ...Rule) Option {
	return func(r *Registry) {
		r.authMode = authToken
		r.users = copyUsers(users)
		r.rules = slices.Clone(rules)
	}
}

func copyUsers(users map[string]string) map[string]string {
	out := make(map[string]string, len(users))
	for u, p := range users {
		out[u] = p
	}
	return out
}

// allowed returns the actions of want that user may perform on repo.
func allowed(rules []Rule, user, repo string, want []string) []string {
	var got []string
	for _, a := range want {
		for _, rule := range rules {
			if rule.User != Anonymous && rule.User != user {
				continue
			}
			if ok, _ := path.Match(rule.Repo, repo); ok && slices.Contains(rule.Actions, a) {
				got = append(got, a)
				break
			}
		}
	}
	return got
}

// configureAuth sets up the registry's access controller in cfg, writing
// its files under tb.TempDir(), and arranges admin access for the push
// helpers.
func (r *Registry) configureAuth(tb testing.TB, cfg *configuration.Configuration) {
	tb.Helper()
	switch r.authMode {
	case authBasic:
		pass := randomSecret(tb)
		users := copyUsers(r.users)
		users[adminUser] = pass
		file := filepath.Join(tb.TempDir(), "htpasswd")
		writeHtpasswd(tb, file, users)
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": basicRealm, "path": file}}
		r.pushAuth = func(string) string { return basicHeader(adminUser, pass) }
	case authToken:
		ts := startTokenServer(tb, r.users, r.rules)
		r.tokens = ts
		cfg.Auth = configuration.Auth{"token": ts.registryParameters(tb)}
		r.pushAuth = func(repo string) string {
			return "Bearer " + ts.mint(adminUser, []grant{{repo: repo, actions: []string{"pull", "push"}}})
		}
	}
}

// writeHtpasswd writes a bcrypt htpasswd file. The minimum cost keeps the
// per-request hash check of the registry cheap; these are test passwords.
func writeHtpasswd(tb testing.TB, file string, users map[string]string) {
	tb.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			tb.Fatalf("registrytest: hash password of %s: %v", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		tb.Fatalf("registrytest: write htpasswd: %v", err)
	}
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func randomSecret(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("registrytest: random secret: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
