package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"

	"nodecache/internal/blobio"
	"nodecache/internal/ociref"
	"nodecache/pkg/credentials"
)

var (
	// ErrUnreachable means no response came back from the registry (or
	// its token server): dial, TLS, timeout before headers, redirect loop.
	ErrUnreachable = errors.New("upstream unreachable")

	// ErrAuth means the token server answered, but not with a usable
	// token (a 5xx, a malformed body, a bad realm in the challenge).
	ErrAuth = errors.New("upstream token fetch failed")

	// ErrStalled means a response body sent nothing for the stall window
	// (WithStallTimeout). A blob body resumes after a stall, and fails
	// with ErrResume wrapping this once it cannot.
	ErrStalled = blobio.ErrStalled

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
	Kind     ociref.Kind // ociref.KindManifests, KindBlobs, KindTags or KindReferrers
	Ref      string      // tag or digest ("" for KindTags)
	Method   string      // http.MethodGet or http.MethodHead
	Header   http.Header // extra headers to forward, e.g. Accept, Range; may be nil
	RawQuery string      // optional query to forward (tags/list: n, last)

	// Auth is the credentials to present for this request, such as a
	// client's own; zero means the node's credentials (WithCredentials),
	// if any, else anonymous. They are sent only to the registry's own
	// host, never to a hosts.toml mirror of it.
	Auth credentials.Auth
}

// Response is a registry's answer and how it was obtained.
type Response struct {
	*http.Response
	// Auth says which credentials were presented to get it. The mirror
	// uses it to know whether content needed credentials.
	Auth AuthSource
}

// Client talks to upstream registries. It is safe for concurrent use.
type Client struct {
	endpoints   map[string]*url.URL
	hosts       *hostsCache // nil without WithHostsDir
	http        *http.Client
	userAgent   string
	tokens      *tokenCache
	creds       credentials.Source // nil without WithCredentials
	identifiers credentials.Identifier
	now         func() time.Time
	sleep       SleepFunc
	guard       *guard
	budget      time.Duration // first-response budget; NoLimit: none
	stall       time.Duration // NoLimit: bodies are not watched
	stallTimers blobio.AfterFunc
	circuits    *circuits
}

// New returns a Client. endpoints maps registry names to base URLs such as
// "https://registry-1.docker.io" or "http://127.0.0.1:5000"; they win over
// WithHostsDir. Any other name resolves through the hosts directory if one
// is set, else to "https://NAME" (Docker Hub to registry-1.docker.io).
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
	cfg.guard = newGuard(cfg.endpointClasses)
	rt := cfg.transport
	if rt == nil {
		rt = newTransport(cfg)
	}
	c := &Client{
		endpoints:   eps,
		http:        &http.Client{Transport: rt, CheckRedirect: cfg.guard.checkRedirect},
		guard:       cfg.guard,
		userAgent:   cfg.userAgent,
		tokens:      newTokenCache(cfg.now),
		creds:       cfg.creds,
		identifiers: credentials.NewIdentifier(),
		now:         cfg.now,
		sleep:       cfg.sleep,
		budget:      cfg.firstResponseBudget,
		stall:       cfg.stallTimeout,
		stallTimers: cfg.stallTimers,
	}
	c.circuits = newCircuits(cfg, c.probeRegistry)
	if cfg.hostsDir != "" {
		c.hosts = &hostsCache{
			dir:     cfg.hostsDir,
			self:    cfg.self,
			now:     cfg.now,
			wrap:    cfg.wrapHostClient,
			entries: make(map[string]hostsEntry),
		}
	}
	return c, nil
}

func (cfg config) check() error {
	switch {
	case cfg.transport != nil && cfg.dialHook != nil:
		return errors.New("upstream: WithDialHook cannot be combined with WithTransport")
	case cfg.now == nil:
		return errors.New("upstream: nil clock")
	case cfg.sleep == nil:
		return errors.New("upstream: nil sleep function")
	}
	return nil
}

func newTransport(cfg config) *http.Transport {
	t := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		ForceAttemptHTTP2: true,
	}
	cfg.tune(t)
	return t
}

// tune applies the timeouts, pool sizes, dial hook and the guard against
// internal addresses reached by redirect to t.
func (cfg config) tune(t *http.Transport) {
	dialer := &net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: 30 * time.Second}
	hook, g := cfg.dialHook, cfg.guard
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if hook != nil {
			hook(ctx, network, addr)
		}
		return g.dial(ctx, dialer, network, addr)
	}
	if t.Proxy != nil {
		t.Proxy = proxy(t.Proxy)
	}
	t.TLSHandshakeTimeout = cfg.tlsHandshakeTimeout
	t.ResponseHeaderTimeout = cfg.responseHeaderTimeout
	t.MaxIdleConnsPerHost = defaultMaxIdleConnsPerHost
	t.IdleConnTimeout = defaultIdleConnTimeout
	// Content is addressed by the digest of its wire bytes, and the
	// mirror needs the real Content-Length: never let net/http ask for
	// gzip and decode it behind our back.
	t.DisableCompression = true
}

// wrapHostClient adapts a client built from hosts.toml: its TLS settings
// stay, our timeouts and redirect policy apply. containerd wraps some
// transports (HTTP fallback); those are kept as they are.
func (cfg config) wrapHostClient(hc *http.Client) *http.Client {
	rt := hc.Transport
	if t, ok := rt.(*http.Transport); ok {
		t = t.Clone()
		cfg.tune(t)
		rt = t
	}
	return &http.Client{Transport: rt, CheckRedirect: cfg.guard.checkRedirect}
}

// Endpoint returns the base URL requests for registry go to when no hosts
// directory is involved.
func (c *Client) Endpoint(registry string) (*url.URL, error) {
	return resolve(c.endpoints, registry)
}

// Do performs r and returns the final response whatever its status; the
// caller closes its Body. See Fetch.
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	resp, err := c.Fetch(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp.Response, nil
}

// Fetch performs r: it answers the registry's Basic or Bearer challenge
// with r's credentials (or the node's, or anonymously), retries 5xx, 429
// and failed connections within the retry budget and the first-response
// budget (WithFirstResponseBudget), and tries the
// registry's endpoints in order, moving on from one that is unreachable,
// failing, or (a mirror) lacks the content. A whole-blob GET that answers
// 200 gets a body that resumes with Range requests if the transfer breaks.
//
// An error wraps ErrUnreachable if no response came back, ErrAuth if the
// token server failed, the context's error if ctx ended, and
// ErrInvalidRequest, ErrInvalidRegistry or ErrInvalidEndpoint if r or the
// configuration is malformed. A registry whose attempts got no answer
// DefaultCircuitFailures times in a row is marked down: its requests fail
// at once with a *CircuitOpenError (wrapping ErrUnreachable) until a
// background probe gets an answer. Errors never contain credentials.
func (c *Client) Fetch(ctx context.Context, r Request) (*Response, error) {
	if err := checkRequest(r); err != nil {
		return nil, err
	}
	if err := c.circuits.allow(r.Registry); err != nil {
		return nil, err
	}
	return c.firstResponse(ctx, r.Registry, func(ctx context.Context, st *retryState) (*Response, error) {
		return c.fetch(ctx, r, st)
	})
}

// fetch is Fetch within the first-response budget of st.
func (c *Client) fetch(ctx context.Context, r Request, st *retryState) (*Response, error) {
	eps, err := c.endpointsFor(ctx, r)
	if err != nil {
		return nil, err
	}
	for i, ep := range eps {
		cr := c.chooseCreds(r, ep)
		resp, err := c.retrying(ctx, r.Registry, st, func() (*Response, error) {
			return c.attempt(ctx, r, ep, cr)
		})
		if i < len(eps)-1 && tryNext(ctx, ep, resp, err) {
			if resp != nil {
				discard(resp.Response)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if resumable(r, resp) {
			if err := c.resumeBody(ctx, r, ep, cr, resp); err != nil {
				discard(resp.Response)
				return nil, err
			}
		}
		return resp, nil
	}
	panic("unreachable: endpointsFor returns at least one endpoint")
}

// tryNext reports whether the next endpoint should be asked after ep
// answered resp or err: ep is unreachable or failing after its retries, or
// ep is a mirror that lacks the content.
func tryNext(ctx context.Context, ep endpoint, resp *Response, err error) bool {
	if err != nil {
		return ctx.Err() == nil && errors.Is(err, ErrUnreachable)
	}
	return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests ||
		(ep.mirror && resp.StatusCode == http.StatusNotFound)
}

// endpointsFor lists where r can be fetched from, in order: the explicit
// endpoint if there is one, else the hosts directory's entries able to
// serve r, else the default URL.
func (c *Client) endpointsFor(ctx context.Context, r Request) ([]endpoint, error) {
	if _, explicit := c.endpoints[r.Registry]; explicit || c.hosts == nil {
		base, err := resolve(c.endpoints, r.Registry)
		if err != nil {
			return nil, err
		}
		return []endpoint{{base: base, path: apiPath, http: c.http, resolve: true}}, nil
	}
	all, err := c.hosts.endpoints(ctx, r.Registry)
	if err != nil {
		return nil, err
	}
	// Resolving a tag needs the "resolve" capability; anything addressed
	// by digest only needs "pull", which every cached entry has.
	needResolve := r.Kind == ociref.KindTags || (r.Kind == ociref.KindManifests && !isDigest(r.Ref))
	eps := make([]endpoint, 0, len(all))
	for _, ep := range all {
		if !needResolve || ep.resolve {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: registry %s: %w", ErrInvalidEndpoint, r.Registry, errNoEndpoint)
	}
	return eps, nil
}

// attempt makes one request to ep, answering one challenge.
//
// Every connection it makes, to a redirect target or a token realm,
// must be to a public address or one of the endpoint's own class.
func (c *Client) attempt(ctx context.Context, r Request, ep endpoint, cr creds) (*Response, error) {
	ctx = c.guard.withPolicy(ctx, ep.base)
	repo := normalizeRepo(r.Registry, r.Repo)
	target := ep.requestURL(repo, r)
	key := tokenKey{registry: r.Registry, host: ep.base.Host, scope: pullScope(repo), identity: cr.identity}

	authz := ""
	if tok, ok := c.tokens.get(key); ok {
		authz = "Bearer " + tok
	}
	resp, err := c.send(ctx, r, ep, target, authz)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return c.answer(resp, authz, cr), err
	}
	ch, ok := challenge(resp, target)
	if !ok {
		return c.answer(resp, authz, cr), nil // no challenge we can answer: the 401 stands
	}
	next, err := c.authorization(ctx, key, ep, authz, ch, cr)
	if errors.Is(err, errDenied) || (err == nil && (next == "" || next == authz)) {
		return c.answer(resp, authz, cr), nil
	}
	discard(resp)
	if err != nil {
		return nil, err
	}
	resp, err = c.send(ctx, r, ep, target, next)
	return c.answer(resp, next, cr), err
}

// authorization returns the Authorization header answering ch, or "" if
// there is none: Basic needs a username and password; Bearer takes a
// registry token as it is, or a token from the realm.
func (c *Client) authorization(ctx context.Context, key tokenKey, ep endpoint, sent string, ch auth.Challenge, cr creds) (string, error) {
	switch {
	case ch.Scheme == auth.BasicAuth:
		return basicAuthorization(cr.auth), nil
	case cr.auth.RegistryToken != "":
		return "Bearer " + cr.auth.RegistryToken, nil
	}
	tok, err := c.token(ctx, key, strings.TrimPrefix(sent, "Bearer "), ch, ep, cr)
	if err != nil {
		return "", err
	}
	return "Bearer " + tok, nil
}

// answer wraps resp with the source of the credentials presented.
func (c *Client) answer(resp *http.Response, authz string, cr creds) *Response {
	if resp == nil {
		return nil
	}
	src := AuthAnonymous
	if authz != "" {
		src = cr.source
	}
	return &Response{Response: resp, Auth: src}
}

// send makes one request to target (following redirects). The request
// runs on a context of its own, which the body's stall watch ends
// (watch) without ending ctx, so a blob body can resume on ctx.
func (c *Client) send(ctx context.Context, r Request, ep endpoint, target *url.URL, authorization string) (*http.Response, error) {
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, r.Method, target.String(), nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	copyForwardable(req.Header, ep.header)
	copyForwardable(req.Header, r.Header)
	req.Header.Set("User-Agent", c.userAgent)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := ep.http.Do(req)
	if err != nil {
		cancel()
		err = transportError(ctx, r.Registry, err)
		var uerr *url.Error
		if errors.As(err, &uerr) && uerr.URL != req.URL.String() {
			// It failed at a hop the registry redirected to.
			err = fmt.Errorf("%w: %w", errRedirectTarget, err)
		}
		return nil, err
	}
	resp.Body = c.watch(resp.Body, cancel)
	return resp, nil
}

// watch returns body ending its request with cancel when closed and, unless
// the watch is off, when it sends nothing for the stall window: the
// Read in progress then fails with an error wrapping ErrStalled.
func (c *Client) watch(body io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	if c.stall < 0 {
		return &watchedBody{ReadCloser: body, cancel: cancel}
	}
	return &watchedBody{ReadCloser: blobio.NewStallReader(body, c.stall, cancel, c.stallTimers), cancel: cancel}
}

// watchedBody is a response body that ends its request's context when
// closed, releasing it.
type watchedBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
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
