package mirror

import (
	"net/url"

	"nodecache/internal/ociref"
)

// passThrough relays tags/list and referrers to upstream, uncached: both
// change whenever something is pushed, and containerd's pull path uses
// neither. Only the query parameters the spec defines are forwarded.
func (s *Server) passThrough(q *request) error {
	ref := ""
	if q.route.kind == ociref.KindReferrers {
		ref = q.route.digest.String()
	}
	req := q.upstreamRequest(q.r.Method, ref, acceptHeader(parseAccept(q.r.Header)))
	forward := url.Values{}
	for _, k := range []string{"n", "last", "artifactType"} {
		if v := q.r.URL.Query().Get(k); v != "" {
			forward.Set(k, v)
		}
	}
	req.RawQuery = forward.Encode()
	return s.relay(q, req, "", "Content-Type", "Content-Length", "Link", "OCI-Filters-Applied")
}
