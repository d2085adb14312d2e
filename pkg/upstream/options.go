package upstream

import (
	"context"
	"net/http"
	"time"
)

const (
	// DefaultDialTimeout bounds a TCP connect. A registry that has not
	// accepted a connection in 5 s is down or filtered; failing fast lets
	// containerd fall back to the registry itself well inside its own 30 s
	// wait for our headers.
	DefaultDialTimeout = 5 * time.Second

	// DefaultTLSHandshakeTimeout bounds the TLS handshake after connect,
	// for the same reason as DefaultDialTimeout.
	DefaultTLSHandshakeTimeout = 5 * time.Second

	// DefaultResponseHeaderTimeout bounds the wait for response headers
	// once a request is written. containerd abandons a mirror that takes
	// 30 s to send headers, so a fresh connection's worst case (dial + TLS
	// + headers = 25 s) must stay below that for our error to reach it.
	DefaultResponseHeaderTimeout = 15 * time.Second

	// DefaultUserAgent identifies the daemon when the caller does not say
	// which version it is.
	DefaultUserAgent = "nodecache/devel"

	// defaultMaxIdleConnsPerHost keeps connections to a registry warm while
	// containerd pulls several layers of one image in parallel (it uses 3
	// by default, a few nodes' worth of peers add more); net/http's default
	// of 2 would close and redial on every burst.
	defaultMaxIdleConnsPerHost = 16

	// defaultIdleConnTimeout drops idle connections after 90 s, as
	// net/http's DefaultTransport does; registries and their load
	// balancers close them about then anyway.
	defaultIdleConnTimeout = 90 * time.Second
)

// DialHook is called before every outbound connection attempt the default
// transport makes, with the dial's network and address. Tests use it to
// count dials.
type DialHook func(ctx context.Context, network, addr string)

// Option configures a Client.
type Option func(*config)

type config struct {
	dialTimeout           time.Duration
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	userAgent             string
	dialHook              DialHook
	transport             http.RoundTripper
	now                   func() time.Time
}

func defaultConfig() config {
	return config{
		dialTimeout:           DefaultDialTimeout,
		tlsHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		responseHeaderTimeout: DefaultResponseHeaderTimeout,
		userAgent:             DefaultUserAgent,
		now:                   time.Now,
	}
}

// WithDialTimeout sets the TCP connect timeout. Zero means no limit other
// than the caller's context. It has no effect with WithTransport.
func WithDialTimeout(d time.Duration) Option {
	return func(c *config) { c.dialTimeout = d }
}

// WithTLSHandshakeTimeout sets the TLS handshake timeout. Zero means no
// limit other than the caller's context. It has no effect with
// WithTransport.
func WithTLSHandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.tlsHandshakeTimeout = d }
}

// WithResponseHeaderTimeout sets how long to wait for response headers
// after the request is written. Zero means no limit other than the
// caller's context. It has no effect with WithTransport. There is
// deliberately no limit on the whole exchange: blobs can be large, and the
// caller's context ends a transfer.
func WithResponseHeaderTimeout(d time.Duration) Option {
	return func(c *config) { c.responseHeaderTimeout = d }
}

// WithUserAgent sets the User-Agent sent to registries and token servers,
// normally "nodecache/<version>".
func WithUserAgent(ua string) Option {
	return func(c *config) { c.userAgent = ua }
}

// WithDialHook installs a hook called before every outbound dial of the
// default transport. It cannot be combined with WithTransport.
func WithDialHook(h DialHook) Option {
	return func(c *config) { c.dialHook = h }
}

// WithTransport replaces the default transport, and with it the timeout
// options. Redirect handling and auth still apply.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *config) { c.transport = rt }
}

// WithClock sets the clock used for token expiry. Tests inject a fake one.
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}
