package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

var (
	// ErrUnreachable means no response came back from the registry (or
	// its token server): dial, TLS, timeout before headers, redirect loop.
	ErrUnreachable = errors.New("upstream unreachable")

	// ErrAuth means the token server answered, but not with a usable
	// token (a 5xx, a malformed body, a bad realm in the challenge).
	ErrAuth = errors.New("upstream token fetch failed")

	// ErrInvalidRequest means a Request field cannot be put in a URL.
	ErrInvalidRequest = errors.New("invalid upstream request")

	// ErrInvalidRegistry means a registry name is not a host or host:port.
	ErrInvalidRegistry = errors.New("invalid registry name")

	// ErrInvalidEndpoint means a configured endpoint URL is unusable.
	ErrInvalidEndpoint = errors.New("invalid endpoint URL")
)

// drainLimit is how much of a discarded body is read so its connection can
// be reused; error bodies are small, and anything larger is cheaper to
// redial than to read.
const drainLimit = 4 << 10

// Request is one pull-path call to a registry.
type Request struct {
	Registry string      // the ns value, e.g. "docker.io"
	Repo     string      // repository name, e.g. "library/nginx"
	Kind     string      // KindManifests, KindBlobs, KindTags or KindReferrers
	Ref      string      // tag or digest ("" for KindTags)
	Method   string      // http.MethodGet or http.MethodHead
	Header   http.Header // extra headers to forward, e.g. Accept, Range; may be nil
	RawQuery string      // optional query to forward (tags/list: n, last)
}

// Client talks to upstream registries. It is safe for concurrent use.
type Client struct {
	endpoints map[string]*url.URL
	http      *http.Client
	userAgent string
	tokens    *tokenCache
}

// New returns a Client. endpoints maps registry names to base URLs such as
// "https://registry-1.docker.io" or "http://127.0.0.1:5000"; a name not in
// it resolves to "https://NAME" (Docker Hub to registry-1.docker.io).
func New(endpoints map[string]string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	eps, err := parseEndpoints(endpoints)
	if err != nil {
		return nil, err
	}
	rt := cfg.transport
	if rt == nil {
		rt = newTransport(cfg)
	}
	hc := &http.Client{Transport: rt, CheckRedirect: checkRedirect}
	return &Client{
		endpoints: eps,
		http:      hc,
		userAgent: cfg.userAgent,
		tokens:    newTokenCache(cfg.now),
	}, nil
}

func (cfg config) check() error {
	switch {
	case cfg.dialTimeout < 0, cfg.tlsHandshakeTimeout < 0, cfg.responseHeaderTimeout < 0:
		return errors.New("upstream: negative timeout")
	case cfg.transport != nil && cfg.dialHook != nil:
		return errors.New("upstream: WithDialHook cannot be combined with WithTransport")
	case cfg.now == nil:
		return errors.New("upstream: nil clock")
	}
	return nil
}

func newTransport(cfg config) *http.Transport {
	dialer := &net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if hook := cfg.dialHook; hook != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			hook(ctx, network, addr)
			return dialer.DialContext(ctx, network, addr)
		}
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.tlsHandshakeTimeout,
		ResponseHeaderTimeout: cfg.responseHeaderTimeout,
		MaxIdleConnsPerHost:   defaultMaxIdleConnsPerHost,
		IdleConnTimeout:       defaultIdleConnTimeout,
		// Content is addressed by the digest of its wire bytes, and the
		// mirror needs the real Content-Length: never let net/http ask
		// for gzip and decode it behind our back.
		DisableCompression: true,
	}
}

// Endpoint returns the base URL requests for registry go to.
func (c *Client) Endpoint(registry string) (*url.URL, error) {
	return resolve(c.endpoints, registry)
}

// Do performs r, answering a bearer challenge once if the registry sends
// one, and returns the final response whatever its status; the caller
// closes its Body. An error wraps ErrUnreachable if no response came back,
// ErrAuth if the token server failed, the context's error if ctx ended, and
// ErrInvalidRequest or ErrInvalidRegistry if r is malformed.
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	if err := checkRequest(r); err != nil {
		return nil, err
	}
	base, err := c.Endpoint(r.Registry)
	if err != nil {
		return nil, err
	}
	repo := normalizeRepo(r.Registry, r.Repo)
	target := requestURL(base, repo, r)
	key := tokenKey{registry: r.Registry, scope: pullScope(repo)}

	tok, _ := c.tokens.get(key)
	resp, err := c.send(ctx, r, target, tok)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch, ok := bearerChallenge(resp, target)
	if !ok {
		return resp, nil // Basic or no challenge: without credentials, the 401 stands.
	}
	fresh, err := c.token(ctx, key, tok, ch)
	if errors.Is(err, errDenied) {
		return resp, nil
	}
	discard(resp)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, r, target, fresh)
}

// send makes one request to target (following redirects).
func (c *Client) send(ctx context.Context, r Request, target *url.URL, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	copyForwardable(req.Header, r.Header)
	req.Header.Set("User-Agent", c.userAgent)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(ctx, r.Registry, err)
	}
	return resp, nil
}

// transportError names the registry and classifies a failed exchange: the
// caller giving up is not the registry being unreachable.
func transportError(ctx context.Context, registry string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("registry %s: %w", registry, err)
	}
	return fmt.Errorf("%w: registry %s: %w", ErrUnreachable, registry, err)
}

// forwardable reports whether the caller may set header k (canonical
// form): the client owns authorization and identity, and hop-by-hop headers
// belong to one connection.
func forwardable(k string) bool {
	switch k {
	case "Authorization", "Proxy-Authorization", "Cookie", "Host", "User-Agent",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade":
		return false
	}
	return true
}

func copyForwardable(dst, src http.Header) {
	for k, vs := range src {
		k = http.CanonicalHeaderKey(k)
		if !forwardable(k) {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// discard drains a little of resp's body so the connection can be reused,
// then closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	_ = resp.Body.Close()
}
