package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"

	"nodecache/internal/hostsdir"
)

// hostsReload is how long the endpoints read from a hosts directory are
// used before the files are read again: an edit to hosts.toml takes effect
// within a minute without a restart, while a pull of many layers reads the
// files once and keeps its connections warm.
const hostsReload = time.Minute

// Host is one upstream endpoint read from a containerd hosts directory.
type Host struct {
	// URL is the API root, such as https://mirror.example/v2.
	URL *url.URL
	// Mirror is true for a [host."..."] entry other than the registry's
	// own host; the server entry (or the default) is last and not a
	// mirror.
	Mirror bool
	// Pull and Resolve are the entry's capabilities: fetch by digest, and
	// resolve tags to digests.
	Pull, Resolve bool
	// Header holds the extra headers the entry asks for.
	Header http.Header
	// Client carries the entry's TLS settings (ca, client, skip_verify).
	Client *http.Client
}

// LoadHosts reads the hosts directory dir (such as /etc/containerd/certs.d)
// for registry with containerd's own parser (through internal/hostsdir,
// which also writes the files for `nodecache hosts`), so it sees exactly what
// containerd sees: dir/<registry>/hosts.toml, else dir/_default/hosts.toml,
// else the registry itself over https. It returns the entries in order,
// mirrors first and the server last, without those that point back at
// nodecache: an entry whose host and port is one of self (nodecache's own
// listen addresses). Loopback names and wildcard addresses are treated as
// one, and a wildcard listener also stands for every local interface
// address, so 127.0.0.1:5000, localhost:5000 and [::1]:5000 all match a
// self of ":5000".
func LoadHosts(ctx context.Context, dir, registry string, self []string) ([]Host, error) {
	if err := checkRegistryName(registry); err != nil {
		return nil, err
	}
	hosts, err := hostsdir.Load(ctx, dir, registry)
	if err != nil {
		return nil, err
	}
	guard := newLoopGuard(self)
	var out []Host
	for _, h := range hosts {
		if guard.isSelf(h) {
			continue
		}
		u := &url.URL{Scheme: h.Scheme, Host: h.Host, Path: h.Path}
		if _, err := parseBaseURL(h.Scheme + "://" + h.Host); err != nil || checkRegistryName(h.Host) != nil {
			return nil, fmt.Errorf("hosts dir %s: registry %s: entry %s: %w", dir, registry, u, ErrInvalidEndpoint)
		}
		out = append(out, Host{
			URL:     u,
			Mirror:  isProxy(registry, h.Host),
			Pull:    h.Capabilities.Has(docker.HostCapabilityPull),
			Resolve: h.Capabilities.Has(docker.HostCapabilityResolve),
			Header:  h.Header,
			Client:  h.Client,
		})
	}
	return out, nil
}

// isProxy reports whether host is not registry's own, as containerd
// decides when it adds ns=.
func isProxy(registry, host string) bool {
	return host != registry && !(registry == dockerHub && host == strings.TrimPrefix(dockerHubEndpoint, "https://"))
}

// loopGuard recognises hosts.toml entries that point at nodecache itself.
type loopGuard struct {
	tcp  map[string]bool // "host:port" with loopback names folded to "local"
	unix []string        // socket paths
}

// localHost stands for every name of this machine's loopback and
// wildcard addresses.
const localHost = "local"

func newLoopGuard(self []string) loopGuard {
	g := loopGuard{tcp: make(map[string]bool)}
	for _, addr := range self {
		if p, ok := unixPath(addr); ok {
			g.unix = append(g.unix, p)
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			continue // not a listen address; nothing can match it
		}
		g.tcp[net.JoinHostPort(foldLocal(host), port)] = true
		if isWildcard(host) {
			for _, ip := range interfaceIPs() {
				g.tcp[net.JoinHostPort(ip, port)] = true
			}
		}
	}
	return g
}

// unixPath returns the socket path of "unix:///p", "unix:/p" or "/p".
func unixPath(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		return p, true
	}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p, true
	}
	return addr, strings.HasPrefix(addr, "/")
}

func (g loopGuard) isSelf(h docker.RegistryHost) bool {
	// containerd parses "unix:///run/x.sock" as host "unix:" with the
	// socket path at the start of Path.
	if h.Host == "unix:" {
		for _, p := range g.unix {
			if h.Path == p || strings.HasPrefix(h.Path, p+"/") {
				return true
			}
		}
		return false
	}
	host, port, err := net.SplitHostPort(h.Host)
	if err != nil {
		host, port = h.Host, defaultPort(h.Scheme)
	}
	return g.tcp[net.JoinHostPort(foldLocal(strings.Trim(host, "[]")), port)]
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

func isWildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

func foldLocal(host string) string {
	h := strings.ToLower(host)
	if isWildcard(h) || h == "localhost" {
		return localHost
	}
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsLoopback() {
			return localHost
		}
		return ip.String()
	}
	return h
}

// interfaceIPs lists this machine's addresses, for wildcard listeners. An
// error leaves only the loopback names, which is the best that can be done.
func interfaceIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}

// hostsCache keeps each registry's endpoints from the hosts directory for
// hostsReload.
type hostsCache struct {
	dir  string
	self []string
	now  func() time.Time
	// wrap turns a hosts.toml client into one with our redirect policy
	// and timeouts.
	wrap func(*http.Client) *http.Client

	// mu guards entries.
	mu      sync.Mutex
	entries map[string]hostsEntry
}

type hostsEntry struct {
	endpoints []endpoint
	loaded    time.Time
}

// endpoints returns registry's endpoints, reading the directory again if
// the cached copy is older than hostsReload. The read happens outside the
// lock; two callers racing may both read, which is harmless.
func (hc *hostsCache) endpoints(ctx context.Context, registry string) ([]endpoint, error) {
	now := hc.now()
	hc.mu.Lock()
	e, ok := hc.entries[registry]
	hc.mu.Unlock()
	if ok && now.Sub(e.loaded) < hostsReload {
		return e.endpoints, nil
	}
	hosts, err := LoadHosts(ctx, hc.dir, registry, hc.self)
	if err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: registry %s: every entry in hosts dir %s points at nodecache itself",
			ErrInvalidEndpoint, registry, hc.dir)
	}
	eps := make([]endpoint, 0, len(hosts))
	for _, h := range hosts {
		eps = append(eps, endpoint{
			base:    &url.URL{Scheme: h.URL.Scheme, Host: h.URL.Host},
			path:    strings.TrimSuffix(h.URL.Path, "/"),
			http:    hc.wrap(h.Client),
			header:  h.Header,
			mirror:  h.Mirror,
			resolve: h.Resolve,
		})
		if !h.Pull {
			eps = eps[:len(eps)-1] // an entry without "pull" serves nothing we fetch
		}
	}
	hc.mu.Lock()
	old := hc.entries[registry]
	hc.entries[registry] = hostsEntry{endpoints: eps, loaded: now}
	hc.mu.Unlock()
	for _, ep := range old.endpoints {
		ep.http.CloseIdleConnections()
	}
	return eps, nil
}

// errNoEndpoint means every entry for a registry lacks a capability the
// request needs.
var errNoEndpoint = errors.New("no endpoint with the needed capability")
