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
			defer c.close()
			if err := s.authorize(q, c); err != nil {
				return err
			}
			s.markSource(q, c)
			return serveContent(q, c)
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
	c, err := s.fetch(q, d, nil)
	if err != nil {
		return err
	}
	return s.serveFetched(q, c, nil)
}

// serveFetched serves content from fetch. A fill that lost its disk
// before this client could join it streams only to the clients it already
// had; this one then gets its own uncached copy.
//
// Every answer with content passes authorize first: the content may be
// private, and this client may not be the one it was fetched for.
func (s *Server) serveFetched(q *request, c content, header http.Header) error {
	if err := s.authorize(q, c); err != nil {
		c.close()
		return err
	}
	s.markSource(q, c)
	err := serveContent(q, c)
	c.close()
	if !errors.Is(err, diskstore.ErrSpilled) {
		return err
	}
	if c, err = s.fetchUncached(q, c.digest, header); err != nil {
		return err
	}
	defer c.close()
	if err := s.authorize(q, c); err != nil {
		return err
	}
	s.markSource(q, c)
	return serveContent(q, c)
}

// markSource notes where content is served from, for the access log and
// the metrics. A fill is a miss, or a peer's if its bytes come from a
// peer; content streamed uncached is upstream.
func (s *Server) markSource(q *request, c content) {
	switch {
	case c.file != nil:
		q.rec.source, q.rec.result = "cache", resultHit
	case c.fill != nil && c.peer != "":
		q.rec.source, q.rec.result = "peer", resultPeer
	case c.fill != nil:
		q.rec.source, q.rec.result = "upstream", resultMiss
	default:
		q.rec.source, q.rec.result = "upstream", resultUpstream
	}
}
