package upstream

// Why not containerd's docker.NewDockerAuthorizer: we use its challenge
// parser (auth.ParseAuthHeader) and token request (auth.FetchToken), but
// not its authorizer, because in containerd v2.4.2 the authorizer
//   - caches a failed token fetch with no expiry: the error sits in the
//     per-scope entry with a nil expiration and Authorize returns it before
//     any request is sent, so one realm outage poisons that repository
//     until restart;
//   - treats a missing expires_in as "never expires" instead of the token
//     spec's 60 s, and ignores issued_at;
//   - reads time.Now directly, so expiry cannot be tested without sleeping;
//   - keys its state by URL host rather than by registry name and never
//     evicts scopes, so the map grows with every repository pulled.
// It is otherwise safe for concurrent use. The cache below is small and
// fixes those points; the wire protocol stays containerd's.
//
// Credentials (see credentials.go) are carried on Request down to the
// token fetch: a username and password go to the realm as an OAuth2
// password grant, falling back to GET with Basic as containerd does; an
// identity token goes as a refresh_token grant. The token cache key holds
// an identity of the credentials, so a token minted for one client is
// never sent for another.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

const (
	// defaultTokenLifetime applies when the token server omits
	// expires_in; the docker token spec says to assume 60 s.
	defaultTokenLifetime = 60 * time.Second

	// tokenFetchTimeout bounds one shared token fetch. It runs detached
	// from the caller that started it so that caller hanging up does not
	// fail the others waiting on it; this keeps a stalled realm from
	// holding the flight open forever.
	tokenFetchTimeout = 30 * time.Second

	// maxCachedTokens bounds the cache at one token per (registry,
	// repository) a node is actively pulling; 4096 is far above a node's
	// working set, and at a few KiB per JWT stays under ~16 MiB.
	maxCachedTokens = 4096
)

// errDenied means the token server refused a token (401/403) to these
// credentials or to anonymous: the registry's own 401 is then the answer.
var errDenied = errors.New("token denied")

// tokenKey identifies a cached token: tokens are per endpoint host (a
// mirror's realm is not the registry's), per scope, and per credential
// identity ("" for anonymous).
type tokenKey struct {
	registry string
	host     string
	scope    string
	identity string
}

type token struct {
	value   string
	expires time.Time
}

// tokenCache holds bearer tokens until they expire and coalesces fetches.
type tokenCache struct {
	now   func() time.Time
	group singleflight.Group

	// mu guards tokens.
	mu     sync.Mutex
	tokens *simplelru.LRU[tokenKey, token]
}

func newTokenCache(now func() time.Time) *tokenCache {
	lru, err := simplelru.NewLRU[tokenKey, token](maxCachedTokens, nil)
	if err != nil {
		panic(err) // unreachable: the size is a positive constant
	}
	return &tokenCache{now: now, tokens: lru}
}

// get returns the unexpired token for k.
func (tc *tokenCache) get(k tokenKey) (string, bool) {
	tc.mu.Lock()
	t, ok := tc.tokens.Get(k)
	tc.mu.Unlock()
	if !ok || !tc.now().Before(t.expires) {
		return "", false
	}
	return t.value, true
}

func (tc *tokenCache) put(k tokenKey, t token) {
	tc.mu.Lock()
	tc.tokens.Add(k, t)
	tc.mu.Unlock()
}

// drop forgets k's token if it is still the one the registry rejected, so
// a newer token fetched meanwhile survives.
func (tc *tokenCache) drop(k tokenKey, rejected string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if t, ok := tc.tokens.Peek(k); ok && t.value == rejected {
		tc.tokens.Remove(k)
	}
}

func pullScope(repo string) string {
	return "repository:" + repo + ":pull"
}

// challenge returns resp's Bearer challenge, else its Basic one, if it
// came from target's origin. A challenge from a redirect target is
// ignored: only the registry itself may name the realm a token and
// credentials go to, or ask for a password.
func challenge(resp *http.Response, target *url.URL) (auth.Challenge, bool) {
	if resp.Request == nil || !sameOrigin(resp.Request.URL, target) {
		return auth.Challenge{}, false
	}
	var basic auth.Challenge
	var hasBasic bool
	for _, ch := range auth.ParseAuthHeader(resp.Header) {
		switch ch.Scheme {
		case auth.BearerAuth:
			return ch, true
		case auth.BasicAuth:
			basic, hasBasic = ch, true
		}
	}
	return basic, hasBasic
}

// token returns a token for k other than rejected (the one the registry
// just refused, or ""), fetching one if needed. Concurrent callers for the
// same key share one fetch.
func (c *Client) token(ctx context.Context, k tokenKey, rejected string, ch auth.Challenge, ep endpoint, cr creds) (string, error) {
	if rejected != "" {
		c.tokens.drop(k, rejected)
	}
	if t, ok := c.tokens.get(k); ok && t != rejected {
		return t, nil
	}
	// Callers share a flight only if they rejected the same token, so the
	// check inside it can never hand a caller back the token it refused.
	flight := k.registry + " " + k.host + " " + k.scope + " " + k.identity + " " + rejected
	res := c.tokens.group.DoChan(flight, func() (any, error) {
		// Check again inside the flight: a flight for k may have finished
		// between the check above and this one starting, and its token
		// must not cost a second trip to the realm.
		if t, ok := c.tokens.get(k); ok && t != rejected {
			return t, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchTimeout)
		defer cancel()
		t, err := c.fetchToken(fctx, k, ch, ep, cr)
		if err != nil {
			return "", err
		}
		c.tokens.put(k, t)
		return t.value, nil
	})
	select {
	case r := <-res:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("registry %s: waiting for token: %w", k.registry, ctx.Err())
	}
}

// oauthClientID identifies nodecache to token servers in OAuth2 grants,
// as containerd sends "containerd-client".
const oauthClientID = "nodecache"

// fetchToken asks the challenge's realm for a token for k.scope, with
// cr's credentials if any.
func (c *Client) fetchToken(ctx context.Context, k tokenKey, ch auth.Challenge, ep endpoint, cr creds) (token, error) {
	realm, err := parseRealm(ch.Parameters["realm"])
	if err != nil {
		return token{}, fmt.Errorf("%w: registry %s: %w", ErrAuth, k.registry, err)
	}
	to := auth.TokenOptions{Realm: realm, Service: ch.Parameters["service"], Scopes: []string{k.scope}}
	switch cr.auth.Kind() {
	case "identity-token":
		to.Secret = cr.auth.IdentityToken // with no username: a refresh_token grant
	case "basic":
		to.Username, to.Secret = cr.auth.Username, cr.auth.Password
	}
	hdr := http.Header{"User-Agent": {c.userAgent}}
	var value string
	var expiresIn int
	var issuedAt time.Time
	if to.Secret == "" {
		resp, ferr := auth.FetchToken(ctx, ep.http, hdr, to)
		if ferr == nil {
			value, expiresIn, issuedAt = resp.Token, resp.ExpiresInSeconds, resp.IssuedAt
		}
		err = ferr
	} else {
		value, expiresIn, issuedAt, err = fetchTokenWithSecret(ctx, ep.http, hdr, to)
	}
	if err != nil {
		return token{}, classifyTokenError(k.registry, realm, err)
	}
	lifetime := time.Duration(expiresIn) * time.Second
	if lifetime <= 0 {
		lifetime = defaultTokenLifetime
	}
	now := c.tokens.now()
	issued := issuedAt
	if issued.IsZero() || issued.After(now) {
		issued = now // missing, or the server's clock is ahead of ours
	}
	return token{value: value, expires: issued.Add(lifetime)}, nil
}

// fetchTokenWithSecret does what containerd's authorizer does with
// credentials: an OAuth2 POST, then, if the realm does not take POST
// (404, 405 with a username, or the 400 and 401 some realms answer), a
// GET with Basic.
func fetchTokenWithSecret(ctx context.Context, hc *http.Client, hdr http.Header, to auth.TokenOptions) (string, int, time.Time, error) {
	resp, err := auth.FetchTokenWithOAuth(ctx, hc, hdr, oauthClientID, to)
	if err == nil {
		return resp.AccessToken, resp.ExpiresInSeconds, resp.IssuedAt, nil
	}
	var status remoteerrors.ErrUnexpectedStatus
	if !errors.As(err, &status) {
		return "", 0, time.Time{}, err
	}
	switch code := status.StatusCode; {
	case code == http.StatusNotFound, code == http.StatusUnauthorized, code == http.StatusBadRequest,
		code == http.StatusMethodNotAllowed && to.Username != "":
		g, gerr := auth.FetchToken(ctx, hc, hdr, to)
		if gerr != nil {
			return "", 0, time.Time{}, gerr
		}
		return g.Token, g.ExpiresInSeconds, g.IssuedAt, nil
	}
	return "", 0, time.Time{}, err
}

func parseRealm(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return "", errors.New("challenge has no realm")
	case err != nil:
		return "", fmt.Errorf("realm %q: %w", raw, err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "", fmt.Errorf("realm %q is not an http(s) URL", raw)
	}
	return u.String(), nil
}

// classifyTokenError sorts a failed token fetch: a refusal lets the
// registry's 401 stand, no answer is ErrUnreachable, anything else ErrAuth.
func classifyTokenError(registry, realm string, err error) error {
	var status remoteerrors.ErrUnexpectedStatus
	var uerr *url.Error
	switch {
	case errors.As(err, &status) &&
		(status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		return errDenied
	case errors.As(err, &uerr):
		// The fetch runs on its own context, so a timeout here is the
		// realm's, not a caller's.
		return fmt.Errorf("%w: registry %s: token realm: %w", ErrUnreachable, registry, err)
	}
	return fmt.Errorf("%w: registry %s: realm %s: %w", ErrAuth, registry, realm, err)
}
