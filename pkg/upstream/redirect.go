package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxRedirects matches net/http's default: Docker Hub and most registries
// need one hop (307 to a CDN), and a chain of ten is a loop.
const maxRedirects = 10

var errTooManyRedirects = errors.New("too many redirects")

// checkRedirect follows up to maxRedirects hops and sends Authorization
// only to the origin (scheme, host and port) of the first request.
//
// net/http strips sensitive headers only when the host name changes and
// not to a subdomain; it compares host names without ports, so
// 127.0.0.1:5000 -> 127.0.0.1:6000 and registry.example -> cdn.registry.example
// keep the header. A registry token is meant for the registry alone, so we
// compare whole origins. Go re-copies the first request's headers on every
// hop, so comparing against via[0] also covers a chain that returns home.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: stopped after %d", errTooManyRedirects, maxRedirects)
	}
	if !sameOrigin(req.URL, via[0].URL) {
		req.Header.Del("Authorization")
		req.Header.Del("Referer") // the CDN has no need to learn the repository path
	}
	return nil
}

// sameOrigin compares scheme, host and port, filling in default ports.
func sameOrigin(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && hostPort(a) == hostPort(b)
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
