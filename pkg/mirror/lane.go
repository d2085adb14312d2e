package mirror

import (
	"net/http"

	"nodecache/internal/ociref"
)

// ManifestRequest reports whether r is a GET or HEAD of a manifest, by
// tag or by digest: an answer of at most maxManifestSize, most often
// from memory in microseconds, never a blob's long stream. The daemon
// serves these in its lean HTTP/1.1 loop (internal/fastlane), where
// net/http's own work per request would cost more than the answer.
func ManifestRequest(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	rt, e := parseRoute(r.URL.Path)
	return e == nil && rt.kind == ociref.KindManifests
}
