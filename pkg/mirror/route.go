package mirror

import (
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
)

// route is a parsed pull-path request.
type route struct {
	kind   ociref.Kind   // also the metric and log label of the route
	name   string        // repository name; empty for the base route
	tag    string        // manifests by tag
	digest digest.Digest // manifests by digest, blobs, referrers
	// host is set when the path's first component has the form of a
	// registry (ociref.IsRegistryComponent) and a repository name follows
	// it: host is that component in lower case, first as sent, and name
	// what follows. Whether it is a registry or part of the name is the
	// allow-list's call (resolve).
	host, first string
}

// parseRoute parses the path of a /v2/ request. It checks the name, tag and
// digest, so nothing a client sends reaches the store or an upstream URL
// unchecked.
func parseRoute(path string) (route, *ocierr.Error) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: ociref.KindBase}, nil
		}
		return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "not a registry API path")
	}
	if rest == "" {
		return route{kind: ociref.KindBase}, nil
	}
	if rest == "_catalog" {
		return route{}, allowsNothing("the catalog is not served by a mirror")
	}
	if rest == "tags/list" || strings.HasSuffix(rest, "/tags/list") {
		rt := route{kind: ociref.KindTags}
		if e := rt.setName(strings.TrimSuffix(rest, "/tags/list")); e != nil {
			return route{}, e
		}
		return rt, nil
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "not a pull path")
	}
	ref, before := rest[i+1:], rest[:i]
	j := strings.LastIndexByte(before, '/')
	if j < 0 {
		return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "not a pull path")
	}
	rt := route{kind: ociref.Kind(before[j+1:])}
	switch rt.kind {
	case ociref.KindManifests, ociref.KindBlobs, ociref.KindReferrers:
	case "uploads":
		return route{}, allowsNothing("pushing is not supported by a mirror")
	default:
		return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "not a pull path")
	}
	if e := rt.setName(before[:j]); e != nil {
		return route{}, e
	}
	if rt.kind == ociref.KindManifests && !strings.Contains(ref, ":") {
		if ociref.CheckTag(ref) != nil {
			// A tag that cannot exist is unknown, as registries answer it
			// (and the distribution-spec conformance suite checks).
			return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeManifestUnknown, "invalid tag %q", truncate(ref))
		}
		rt.tag = ref
		return rt, nil
	}
	if ociref.Check(digest.Digest(ref)) != nil {
		return route{}, ocierr.Errorf(http.StatusBadRequest, ocierr.CodeDigestInvalid, "invalid digest %q: want sha256 or sha512", truncate(ref))
	}
	rt.digest = digest.Digest(ref)
	return rt, nil
}

// setName sets the repository name from the path's, and host and first
// when its first component has the form of a registry. Either way what
// would be the repository is checked: with host set, the name after it
// (the name with host in front is checked by resolve, if it comes to
// that).
func (rt *route) setName(path string) *ocierr.Error {
	first, rest, ok := strings.Cut(path, "/")
	if !ok || !ociref.IsRegistryComponent(first) {
		rt.name = path
		return checkName(path)
	}
	rt.host, rt.first, rt.name = strings.ToLower(first), first, rest
	return checkName(rest)
}

// resolve decides which registry the request is for, from the registry
// in the path (rt.host), ns (lower case, "" if absent), the allow-list
// and the default registry ("" for none):
//
//   - A path registry on the allow-list is the registry, and must agree
//     with ns if both are given.
//   - A path registry that is not allowed is refused (403) when nothing
//     else names a registry, or when it has a port, which no repository
//     name can have: a client that put a registry there meant it, and
//     must not be served another registry's image of the same name.
//   - Otherwise, with ns given, the first component is part of the
//     repository name, as it always was (a namespace such as my.team at
//     a registry that allows dots there).
//   - Without a registry in the path, ns, else the default registry,
//     else a 404 that names --default-registry.
//
// The registry is returned with the error of a refusal too, for the log.
// rt.name is left the repository as the registry knows it.
func (rt *route) resolve(ns string, allowed map[string]bool, def string) (string, *ocierr.Error) {
	if rt.host != "" {
		switch {
		case allowed[rt.host] && ns != "" && ns != rt.host:
			return rt.host, ocierr.Errorf(http.StatusBadRequest, ocierr.CodeNameInvalid,
				"the path names registry %q and ns names %q; name one registry", rt.host, truncate(ns))
		case allowed[rt.host]:
			return rt.host, rt.canonical(rt.host)
		case ns == "" || strings.Contains(rt.host, ":"):
			return rt.host, notAllowed(rt.host)
		}
		rt.name, rt.host, rt.first = rt.first+"/"+rt.name, "", ""
		if e := checkName(rt.name); e != nil {
			return ns, e
		}
	}
	registry := ns
	if registry == "" {
		registry = def
	}
	if registry == "" {
		return "", ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown,
			"the request names no registry, and nodecache runs with --default-registry none: "+
				"send ?ns=REGISTRY, or put the registry first in the path, /v2/REGISTRY/%s/...", truncate(rt.name))
	}
	if !allowed[registry] {
		return registry, notAllowed(registry)
	}
	return registry, rt.canonical(registry)
}

// notAllowed is the answer for a registry not on the allow-list.
func notAllowed(registry string) *ocierr.Error {
	return ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied,
		"registry %q is not allowed; allow it with --allow-registry %s", truncate(registry), truncate(registry))
}

// dockerHub is the registry whose one-component names live under library/.
const dockerHub = "docker.io"

// canonical makes rt.name the name as registry knows it. Docker Hub's
// official images are library/NAME: docker pull alpine means
// library/alpine, and containerd and containers/image send library/alpine
// themselves. A client that sends docker.io/alpine gets the same image,
// from the same tag record and the same access check. The name is checked
// again, as the prefix makes it longer.
func (rt *route) canonical(registry string) *ocierr.Error {
	if registry != dockerHub || strings.Contains(rt.name, "/") {
		return nil
	}
	rt.name = "library/" + rt.name
	return checkName(rt.name)
}

// allowsNothing is the 405 of a resource a mirror serves to no method
// (the catalog, uploads): its Allow is empty, which RFC 9110 (10.2.1)
// gives for a resource that allows no method, rather than naming GET for
// the GET it refuses. A 404 would tell a push client that the repository
// does not exist, where the truth is that this server does not push.
func allowsNothing(msg string) *ocierr.Error {
	e := ocierr.Errorf(http.StatusMethodNotAllowed, ocierr.CodeUnsupported, "%s", msg)
	e.Header = http.Header{"Allow": {""}}
	return e
}

func checkName(name string) *ocierr.Error {
	if len(name) > ociref.MaxNameLength {
		return ocierr.Errorf(http.StatusBadRequest, ocierr.CodeNameInvalid, "repository name longer than %d characters", ociref.MaxNameLength)
	}
	if ociref.CheckName(name) != nil {
		return ocierr.Errorf(http.StatusBadRequest, ocierr.CodeNameInvalid, "invalid repository name %q", truncate(name))
	}
	return nil
}

// truncate keeps error messages short whatever a client sends.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
