package upstream

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

const (
	// dockerHub is the registry name containerd uses for Docker Hub.
	dockerHub = "docker.io"

	// dockerHubEndpoint is where Docker Hub's registry API lives; the
	// docker.io host itself only redirects browsers to the website.
	dockerHubEndpoint = "https://registry-1.docker.io"
)

// parseEndpoints validates the explicit registry-to-URL overrides.
func parseEndpoints(endpoints map[string]string) (map[string]*url.URL, error) {
	out := make(map[string]*url.URL, len(endpoints))
	for name, raw := range endpoints {
		if err := checkRegistryName(name); err != nil {
			return nil, fmt.Errorf("endpoint %s=%s: %w", name, raw, err)
		}
		u, err := parseBaseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s=%s: %w", name, raw, err)
		}
		out[name] = u
	}
	return out, nil
}

// parseBaseURL accepts an http or https URL with a host and nothing after
// it but an optional "/".
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrInvalidEndpoint, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: scheme must be http or https", ErrInvalidEndpoint)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%w: no host", ErrInvalidEndpoint)
	case u.User != nil:
		return nil, fmt.Errorf("%w: user info is not allowed", ErrInvalidEndpoint)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("%w: query is not allowed", ErrInvalidEndpoint)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("%w: fragment is not allowed", ErrInvalidEndpoint)
	case u.Path != "" && u.Path != "/":
		return nil, fmt.Errorf("%w: path is not supported (the client adds /v2/)", ErrInvalidEndpoint)
	}
	u.Path, u.RawPath = "", ""
	return u, nil
}

// checkRegistryName accepts a bare host or host:port, which is what
// containerd puts in ns. Anything else (paths, user info, queries) would let
// a client steer the URL the daemon connects to.
func checkRegistryName(name string) error {
	u, err := url.Parse("https://" + name)
	if err != nil || name == "" || u.Host != name || u.Hostname() == "" ||
		u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return fmt.Errorf("%w: %q is not a host or host:port", ErrInvalidRegistry, name)
	}
	return nil
}

// endpoint is one place a registry's content can be fetched from.
type endpoint struct {
	base   *url.URL     // scheme and host
	path   string       // API root, normally "/v2"
	http   *http.Client // with the endpoint's TLS settings
	header http.Header  // extra headers from hosts.toml; may be nil
	// mirror is set for a hosts.toml entry other than the registry's own
	// host: it gets ns=, a 404 from it means "try the next one", and it
	// never receives the registry's credentials.
	mirror bool
	// resolve is false for a hosts.toml entry without the "resolve"
	// capability: it may serve content by digest but not resolve tags.
	resolve bool
}

// apiPath is the API root of explicit and default endpoints.
const apiPath = "/v2"

// resolve returns the base URL for a registry name.
func resolve(overrides map[string]*url.URL, registry string) (*url.URL, error) {
	if err := checkRegistryName(registry); err != nil {
		return nil, err
	}
	if u, ok := overrides[registry]; ok {
		c := *u
		return &c, nil
	}
	raw := "https://" + registry
	if registry == dockerHub {
		raw = dockerHubEndpoint
	}
	return url.Parse(raw)
}

// normalizeRepo adds Docker Hub's implicit "library/" namespace.
func normalizeRepo(registry, repo string) string {
	if registry == dockerHub && repo != "" && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

// checkRequest validates the parts of r that end up in the URL path, with
// ociref's grammar: untrusted names and references cannot shape the
// upstream URL.
func checkRequest(r Request) error {
	if ociref.CheckName(r.Repo) != nil {
		return fmt.Errorf("%w: repository %q", ErrInvalidRequest, r.Repo)
	}
	if r.Method != "GET" && r.Method != "HEAD" {
		return fmt.Errorf("%w: method %q", ErrInvalidRequest, r.Method)
	}
	var refOK bool
	switch r.Kind {
	case ociref.KindManifests:
		refOK = ociref.CheckTag(r.Ref) == nil || isDigest(r.Ref)
	case ociref.KindBlobs, ociref.KindReferrers:
		refOK = isDigest(r.Ref)
	case ociref.KindTags:
		refOK = r.Ref == ""
	default:
		return fmt.Errorf("%w: kind %q", ErrInvalidRequest, r.Kind)
	}
	if !refOK {
		return fmt.Errorf("%w: reference %q for %s", ErrInvalidRequest, r.Ref, r.Kind)
	}
	if _, err := url.ParseQuery(r.RawQuery); err != nil {
		return fmt.Errorf("%w: query %q: %w", ErrInvalidRequest, r.RawQuery, err)
	}
	return nil
}

// isDigest reports whether s is a digest of an accepted algorithm.
func isDigest(s string) bool { return ociref.Check(digest.Digest(s)) == nil }

// requestURL builds <base><path>/<repo>/<kind>[/<ref>][?query]; repo must
// be normalized and r validated. A hosts.toml mirror also gets ns=<registry>,
// as containerd sends it, so a mirror serving several registries knows
// which one is meant.
func (ep endpoint) requestURL(repo string, r Request) *url.URL {
	u := *ep.base
	u.Path = ep.path + "/" + repo + "/" + r.Kind.Path()
	if r.Ref != "" {
		u.Path += "/" + r.Ref
	}
	u.RawPath = ""
	u.RawQuery = r.RawQuery
	if ep.mirror {
		q, _ := url.ParseQuery(r.RawQuery) // checked by checkRequest
		q.Set("ns", r.Registry)
		u.RawQuery = q.Encode()
	}
	return &u
}
