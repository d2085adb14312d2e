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
		name := strings.TrimSuffix(rest, "/tags/list")
		if e := checkName(name); e != nil {
			return route{}, e
		}
		return route{kind: ociref.KindTags, name: name}, nil
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
	rt := route{kind: ociref.Kind(before[j+1:]), name: before[:j]}
	switch rt.kind {
	case ociref.KindManifests, ociref.KindBlobs, ociref.KindReferrers:
	case "uploads":
		return route{}, allowsNothing("pushing is not supported by a mirror")
	default:
		return route{}, ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "not a pull path")
	}
	if e := checkName(rt.name); e != nil {
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
