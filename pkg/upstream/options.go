package upstream

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"nodecache/internal/blobio"
	"nodecache/pkg/credentials"
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

	// DefaultFirstResponseBudget bounds everything before a request's
	// first response: endpoints, token fetches, dials, TLS handshakes,
	// waits for headers and the sleeps between retries, across every
	// attempt and endpoint. containerd abandons a mirror that has not sent
	// headers within 30 s; one attempt may take up to 25 s (dial, TLS,
	// headers), so three could take 75 s, and our error would never reach
	// it. 25 s leaves the mirror's own work before upstream (a peer asked
	// first costs at most 2.3 s) and the answer's trip inside the 30 s.
	DefaultFirstResponseBudget = 25 * time.Second

	// DefaultStallTimeout ends an upstream body that sends nothing for
	// 20 s: the transfer counts as broken, and a blob resumes by Range
	// (else the fill fails and its clients are cut) instead of holding
	// every client of the layer for the whole fill timeout. Healthy
	// registries and CDNs pause for a few seconds at most. It is below
	// peer.DefaultStallTimeout (30 s), so an owner whose own upstream
	// stalls resumes before the peers reading from it give up on it, and
	// below containerd's 30 s wait for a mirror's headers, so a client
	// joining a stalled fill learns of it within that wait.
	DefaultStallTimeout = 20 * time.Second

	// DefaultUserAgent identifies the daemon when the caller does not say
	// which version it is.
	DefaultUserAgent = "nodecache/devel"

	// defaultMaxIdleConnsPerHost keeps connections to a registry warm while
	// containerd pulls several layers of one image in parallel (it uses 3
	// by default, a few nodes' worth of peers add more); net/http's default
	// of 2 would close and redial on every burst.
	defaultMaxIdleConnsPerHost = 16

	// NoLimit, passed to a timeout option, turns that limit off: only the
	// caller's context bounds the wait.
	NoLimit time.Duration = -1

	// defaultIdleConnTimeout drops idle connections after 90 s, as
	// net/http's DefaultTransport does; registries and their load
	// balancers close them about then anyway.
	defaultIdleConnTimeout = 90 * time.Second
)

// DialHook is called before every outbound connection attempt the default
// transport makes, with the dial's network and address. Tests use it to
// count dials.
type DialHook func(ctx context.Context, network, addr string)

// Option configures a Client (New). The options fill a config rather
// than the Client because the transport is built from them before the
// Client exists.
//
// Durations follow the rule of every package here: zero means the named
// default, and a negative value (NoLimit) switches the limit off.
type Option func(*config)

type config struct {
	dialTimeout           time.Duration
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	firstResponseBudget   time.Duration
	stallTimeout          time.Duration
	stallTimers           blobio.AfterFunc
	endpointClasses       endpointClassesFunc
	guard                 *guard // built by New from endpointClasses
	userAgent             string
	dialHook              DialHook
	transport             http.RoundTripper
	now                   func() time.Time
	sleep                 SleepFunc
	creds                 credentials.Source
	hostsDir              string
	self                  []string
	circuitFailures       int                // <= 0: the circuit never opens
	probeInterval         time.Duration      // first wait between probes of a registry marked down
	maxProbeInterval      time.Duration      // cap of that wait
	probeSleep            SleepFunc          // how a probe waits; tests shorten it
	onCircuit             func(string, bool) // OnCircuitChange
	log                   *slog.Logger
}

func defaultConfig() config {
	return config{
		dialTimeout:           DefaultDialTimeout,
		tlsHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		responseHeaderTimeout: DefaultResponseHeaderTimeout,
		firstResponseBudget:   DefaultFirstResponseBudget,
		stallTimeout:          DefaultStallTimeout,
		stallTimers:           blobio.RealTimers,
		endpointClasses:       resolvedClasses,
		userAgent:             DefaultUserAgent,
		now:                   time.Now,
		sleep:                 sleepCtx,
		circuitFailures:       DefaultCircuitFailures,
		probeInterval:         DefaultProbeInterval,
		maxProbeInterval:      DefaultMaxProbeInterval,
		probeSleep:            sleepCtx,
		log:                   slog.New(slog.DiscardHandler),
	}
}

// WithDialTimeout sets the TCP connect timeout. Zero means
// DefaultDialTimeout; a negative value (NoLimit) means no limit other
// than the caller's context. It has no effect with WithTransport.
func WithDialTimeout(d time.Duration) Option {
	return func(c *config) { c.dialTimeout = timeout(d, DefaultDialTimeout) }
}

// WithTLSHandshakeTimeout sets the TLS handshake timeout. Zero means
// DefaultTLSHandshakeTimeout; a negative value (NoLimit) means no limit
// other than the caller's context. It has no effect with WithTransport.
func WithTLSHandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.tlsHandshakeTimeout = timeout(d, DefaultTLSHandshakeTimeout) }
}

// WithResponseHeaderTimeout sets how long to wait for response headers
// after the request is written. Zero means DefaultResponseHeaderTimeout;
// a negative value (NoLimit) means no limit other than the caller's
// context. It has no effect with WithTransport. There is deliberately no
// limit on the whole exchange: blobs can be large, and the caller's
// context ends a transfer.
func WithResponseHeaderTimeout(d time.Duration) Option {
	return func(c *config) { c.responseHeaderTimeout = timeout(d, DefaultResponseHeaderTimeout) }
}

// WithFirstResponseBudget bounds the wait for a request's first response,
// retries and endpoints included: when it is spent, Fetch fails with
// ErrUnreachable. It bounds nothing once the response is in: a body is
// watched by the stall timeout instead. It is also the bound of each
// Range request that resumes a blob. Zero means
// DefaultFirstResponseBudget; a negative value (NoLimit) means no limit
// other than the attempts' own timeouts and the caller's context. It
// applies with WithTransport too.
func WithFirstResponseBudget(d time.Duration) Option {
	return func(c *config) { c.firstResponseBudget = orNoLimit(d, DefaultFirstResponseBudget) }
}

// orNoLimit applies the zero rule to a limit this package enforces
// itself: zero is def, a negative value NoLimit.
func orNoLimit(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return NoLimit
	}
	return d
}

// WithStallTimeout sets how long a response body may send nothing before
// its transfer counts as broken: a blob body resumes by Range (within the
// resume budget), any other body fails with an error wrapping ErrStalled.
// Zero means DefaultStallTimeout; a negative value (NoLimit) turns the
// watch off. It applies with WithTransport too. A transfer that makes
// progress is never cut by it.
func WithStallTimeout(d time.Duration) Option {
	return func(c *config) { c.stallTimeout = orNoLimit(d, DefaultStallTimeout) }
}

// withStallTimers sets how stall timers start; tests fire them by hand.
func withStallTimers(f blobio.AfterFunc) Option {
	return func(c *config) { c.stallTimers = f }
}

// withEndpointClasses replaces how the address classes of an endpoint
// are found; tests force a loopback registry to count as public.
func withEndpointClasses(f endpointClassesFunc) Option {
	return func(c *config) { c.endpointClasses = f }
}

// timeout applies the zero rule to a timeout option: zero is def, a
// negative value is net/http's "no limit", which is zero.
func timeout(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
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
// options and the dial-time refusal of internal addresses reached by
// redirect (the transport dials as it likes). Redirect handling, the
// refusal of https to http redirects and auth still apply.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *config) { c.transport = rt }
}

// WithClock sets the clock used for token expiry. Tests inject a fake one.
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}

// WithSleep sets how the client waits between retries. Tests inject one
// that records the waits and returns at once.
func WithSleep(sleep SleepFunc) Option {
	return func(c *config) { c.sleep = sleep }
}

// WithCredentials sets the node's own credentials, looked up by registry
// name (or, for a hosts.toml mirror, by the mirror's host) and used for
// requests whose Request.Auth is zero. Nil means none.
func WithCredentials(src credentials.Source) Option {
	return func(c *config) { c.creds = src }
}

// WithHostsDir makes registries without an explicit endpoint resolve
// through containerd's hosts directory dir (such as
// /etc/containerd/certs.d): each mirror entry in order, then the server,
// with their TLS settings and headers; see LoadHosts. self lists
// nodecache's own listen addresses; entries pointing at them are skipped,
// so containerd's hosts.toml naming nodecache as a mirror does not make
// nodecache ask itself. An empty dir disables it.
func WithHostsDir(dir string, self []string) Option {
	return func(c *config) {
		c.hostsDir = dir
		c.self = append([]string(nil), self...)
	}
}

// WithCircuitFailures sets how many attempts in a row without an answer
// mark a registry down (see ErrCircuitOpen). Zero means
// DefaultCircuitFailures; a negative value switches the circuit off, so
// every request pays its own retries.
func WithCircuitFailures(n int) Option {
	return func(c *config) {
		switch {
		case n == 0:
			c.circuitFailures = DefaultCircuitFailures
		case n < 0:
			c.circuitFailures = 0
		default:
			c.circuitFailures = n
		}
	}
}

// WithProbeInterval sets the wait after the first probe of a registry
// marked down (which asks at once), doubling up to max after each probe
// without an answer.
// Zero means DefaultProbeInterval and DefaultMaxProbeInterval; a negative
// value means the default too: a circuit that is never probed would never
// close. A max below d is d.
func WithProbeInterval(d, maxWait time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			d = DefaultProbeInterval
		}
		if maxWait <= 0 {
			maxWait = DefaultMaxProbeInterval
		}
		c.probeInterval, c.maxProbeInterval = d, max(maxWait, d)
	}
}

// OnCircuitChange calls f each time a registry is marked down (open) or
// answers again (!open), after the log line. f must not block.
func OnCircuitChange(f func(registry string, open bool)) Option {
	return func(c *config) { c.onCircuit = f }
}

// WithLogger sets the logger, which gets one line when a registry is
// marked down and one when it answers again. The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.log = l }
}
