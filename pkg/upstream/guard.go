package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrRedirectRefused means a redirect (or a token realm) was not followed:
// it pointed at an internal address outside the endpoint's own address
// class, or from https to http. No connection was made to its target.
// The error wraps ErrUnreachable too, and is not retried.
var ErrRedirectRefused = errors.New("redirect refused")

// addrClass sorts IP addresses by who may reach them.
type addrClass uint8

const (
	classPublic      addrClass = iota
	classLoopback              // 127/8, ::1
	classPrivate               // 10/8, 172.16/12, 192.168/16, 100.64/10, 192.0.0/24, 198.18/15, fc00::/7
	classLinkLocal             // 169.254/16 (cloud metadata), fe80::/10
	classUnspecified           // 0/8, ::
	classMulticast             // 224/4, 255.255.255.255, ff00::/8
)

func (c addrClass) String() string {
	return [...]string{"public", "loopback", "private", "link-local", "unspecified", "multicast"}[c]
}

// Blocks that are not public although netip does not call them private:
// shared address space (RFC 6598, carrier-grade NAT, and where some clouds
// put their metadata service: Alibaba's is 100.100.100.200), IETF protocol
// assignments (RFC 6890) and benchmarking (RFC 2544).
var privateV4 = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
}

// nat64 is the well-known NAT64 prefix (RFC 6052): its addresses reach the
// IPv4 address in their last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// classify returns a's class; an IPv4-mapped IPv6 address, or a NAT64 one,
// is the IPv4 address it carries.
func classify(a netip.Addr) addrClass {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case a.IsLoopback():
		return classLoopback
	case a.IsUnspecified(), a.Is4() && a.As4()[0] == 0:
		return classUnspecified
	case a.IsLinkLocalUnicast():
		return classLinkLocal
	case a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return classMulticast
	case a.IsPrivate(), inAny(privateV4, a):
		return classPrivate
	}
	return classPublic
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// classSet is a set of address classes.
type classSet uint8

func (s classSet) with(c addrClass) classSet { return s | 1<<c }
func (s classSet) has(c addrClass) bool      { return s&(1<<c) != 0 }

// endpointClassesFunc returns the classes of the addresses host resolves to:
// the classes a redirect from an endpoint on host may reach besides
// public addresses. Tests replace it (withEndpointClasses).
type endpointClassesFunc func(ctx context.Context, host string) (classSet, error)

// resolvedClasses is the real endpointClassesFunc.
func resolvedClasses(ctx context.Context, host string) (classSet, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return classSet(0).with(classify(a)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return 0, err
	}
	var s classSet
	for _, a := range addrs {
		s = s.with(classify(a))
	}
	return s, nil
}

// Reasons a redirect is refused, the label of the refusal counter.
const (
	refusedInternal  = "internal_address"
	refusedDowngrade = "https_to_http"
)

// guard refuses redirects to internal addresses and downgrades, and
// counts the refusals. One guard serves every transport of a Client.
type guard struct {
	classes endpointClassesFunc
	refused *prometheus.CounterVec
}

func newGuard(classes endpointClassesFunc) *guard {
	g := &guard{
		classes: classes,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_upstream_redirects_refused_total",
			Help: "Redirects and token realms not followed, by reason: an internal address outside the endpoint's own class (internal_address), or https to http (https_to_http).",
		}, []string{"reason"}),
	}
	for _, r := range []string{refusedInternal, refusedDowngrade} {
		g.refused.WithLabelValues(r) // export zeros, so rates work from the start
	}
	return g
}

// dialPolicy is what the guard knows of the request a dial is for: the
// endpoint it was sent to, and the proxies the transport chose for it.
type dialPolicy struct {
	origin string // the endpoint's host:port, which is dialled unchecked
	host   string // the endpoint's host, resolved for its classes
	g      *guard

	once    sync.Once // computes allowed and err, on the first check
	allowed classSet
	err     error

	mu      sync.Mutex // guards proxies
	proxies []string   // host:port of proxies chosen for this request
}

type policyKey struct{}

// withPolicy returns ctx carrying the dial policy of a request to ep.
func (g *guard) withPolicy(ctx context.Context, ep *url.URL) context.Context {
	return context.WithValue(ctx, policyKey{}, &dialPolicy{origin: hostPort(ep), host: ep.Hostname(), g: g})
}

func policyFrom(ctx context.Context) (*dialPolicy, bool) {
	p, ok := ctx.Value(policyKey{}).(*dialPolicy)
	return p, ok
}

// proxy wraps a transport's Proxy so that the proxy it chooses is dialled
// unchecked: the proxy resolves the target, not us, and the operator chose
// it.
func proxy(base func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		u, err := base(req)
		if u != nil {
			if p, ok := policyFrom(req.Context()); ok {
				p.mu.Lock()
				p.proxies = append(p.proxies, hostPort(u))
				p.mu.Unlock()
			}
		}
		return u, err
	}
}

// trusted reports whether addr is the endpoint itself or a proxy.
func (p *dialPolicy) trusted(addr string) bool {
	if addr == p.origin {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.proxies {
		if a == addr {
			return true
		}
	}
	return false
}

// dial dials addr with d, checking the address it resolves to unless addr
// is the endpoint itself or a proxy. A dial outside any request (none
// carries no policy) is not checked.
func (g *guard) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	p, ok := policyFrom(ctx)
	if !ok || p.trusted(addr) {
		return d.DialContext(ctx, network, addr)
	}
	checked := *d
	checked.ControlContext = func(ctx context.Context, _, address string, _ syscall.RawConn) error {
		return p.check(ctx, address)
	}
	conn, err := checked.DialContext(ctx, network, addr)
	if errors.Is(err, ErrRedirectRefused) {
		g.refused.WithLabelValues(refusedInternal).Inc()
	}
	return conn, err
}

// check refuses a connection to address (ip:port, resolved) unless it is
// public or of a class the endpoint's own addresses have.
func (p *dialPolicy) check(ctx context.Context, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrRedirectRefused, address)
	}
	c := classify(ap.Addr())
	if c == classPublic {
		return nil
	}
	p.once.Do(func() { p.allowed, p.err = p.g.classes(ctx, p.host) })
	if p.err == nil && p.allowed.has(c) {
		return nil
	}
	return fmt.Errorf("%w: %s is a %s address, and the endpoint %s is not", ErrRedirectRefused, ap.Addr(), c, p.host)
}

// checkRedirect is checkRedirect, refusing https to http downgrades, and
// targets the dial check would refuse: checked here too, since a
// connection the transport already holds to the target (dialled for an
// endpoint of its class) would be reused without a dial. A target given
// by name is resolved for the check; a new connection is checked again
// at its dial, on the address it then resolves to.
func (g *guard) checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme == "http" {
		for _, v := range via {
			if v.URL.Scheme == "https" {
				g.refused.WithLabelValues(refusedDowngrade).Inc()
				return fmt.Errorf("%w: from https to http", ErrRedirectRefused)
			}
		}
	}
	if p, ok := policyFrom(req.Context()); ok && !p.trusted(hostPort(req.URL)) {
		if err := p.checkHost(req.Context(), req.URL.Hostname()); err != nil {
			g.refused.WithLabelValues(refusedInternal).Inc()
			return err
		}
	}
	return checkRedirect(req, via)
}

// checkHost applies check to every address host (a name or an address)
// resolves to. A name that does not resolve is left to the dial, which
// fails on it.
func (p *dialPolicy) checkHost(ctx context.Context, host string) error {
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil
	}
	for _, a := range addrs {
		if err := p.check(ctx, netip.AddrPortFrom(a.Unmap(), 0).String()); err != nil {
			return err
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (c *Client) Describe(ch chan<- *prometheus.Desc) {
	c.guard.refused.Describe(ch)
	c.circuits.gauge.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Client) Collect(ch chan<- prometheus.Metric) {
	c.guard.refused.Collect(ch)
	c.circuits.gauge.Collect(ch)
}
