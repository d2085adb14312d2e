package mirror

import (
	"io"
	"net/http"
	"net/url"
)

// passThrough relays tags/list and referrers to upstream, uncached: both
// change whenever something is pushed, and containerd's pull path uses
// neither. Only the query parameters the spec defines are forwarded.
func (s *Server) passThrough(q *request) error {
	ref := ""
	if q.route.kind == kindReferrers {
		ref = q.route.digest.String()
	}
	req := q.upstreamRequest(q.r.Method, ref, acceptHeader(parseAccept(q.r.Header)))
	if q.route.kind == kindTags {
		req.Kind = "tags/list"
	}
	forward := url.Values{}
	for _, k := range []string{"n", "last", "artifactType"} {
		if v := q.r.URL.Query().Get(k); v != "" {
			forward.Set(k, v)
		}
	}
	req.RawQuery = forward.Encode()
	resp, err := s.up.Do(q.r.Context(), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upstreamError(q.registry, q.route.kind, resp.StatusCode)
	}
	q.rec.source = "upstream"
	copyHeaders(q.rec.Header(), resp.Header, "Content-Type", "Content-Length", "Link", "OCI-Filters-Applied")
	q.rec.WriteHeader(http.StatusOK)
	if _, err := io.Copy(q.rec, resp.Body); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}
