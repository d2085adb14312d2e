package mirror

import (
	"net/http"
	"strconv"

	"nodecache/pkg/upstream"
)

// serveBlob answers GET and HEAD of /v2/<name>/blobs/<digest>.
func (s *Server) serveBlob(q *request) error {
	d := q.route.digest
	if q.r.Method == http.MethodHead {
		c, ok, err := s.lookup(d)
		if err != nil {
			return err
		}
		if ok {
			return s.serveAuthorized(q, c)
		}
		resp, err := s.headUpstream(q, d.String(), nil)
		if err != nil {
			return err
		}
		q.rec.source = "upstream"
		h := q.rec.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Docker-Content-Digest", d.String())
		if resp.ContentLength >= 0 {
			h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
		q.rec.WriteHeader(http.StatusOK)
		return nil
	}
	c, err := s.obtain(q, d, nil)
	if err != nil {
		return err
	}
	return s.serve(q, c, nil)
}

// headUpstream answers a HEAD for content the store lacks from upstream's
// own HEAD, without fetching the content.
func (s *Server) headUpstream(q *request, ref string, header http.Header) (*upstream.Response, error) {
	resp, err := s.ask(q.r.Context(), q, q.upstreamRequest(http.MethodHead, ref, header))
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, upstreamError(q.registry, q.route.kind, resp.StatusCode, resp.Header)
	}
	return resp, nil
}
