package mirror

import (
	"errors"
	"net/http"
	"strconv"

	"nodecache/pkg/diskstore"
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

// serve serves content from obtain. A fill that lost its disk before this
// client could join it streams only to the clients it already had; this
// one then gets its own uncached copy.
func (s *Server) serve(q *request, c content, header http.Header) error {
	err := s.serveAuthorized(q, c)
	if !errors.Is(err, diskstore.ErrSpilled) {
		return err
	}
	if c, err = s.fetchUncached(q, c.info().digest, header); err != nil {
		return err
	}
	return s.serveAuthorized(q, c)
}

// serveAuthorized serves c, and closes it, if this client may have it.
// Every answer with content passes authorize first: the content may be
// private, and this client may not be the one it was fetched for.
func (s *Server) serveAuthorized(q *request, c content) error {
	defer c.close()
	if err := s.authorize(q, c.info()); err != nil {
		return err
	}
	c.markSource(q.rec)
	return serveContent(q, c)
}
