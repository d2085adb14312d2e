package mirror

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/upstream"
)

// serveBlob answers GET and HEAD of /v2/<name>/blobs/<digest>.
func (s *Server) serveBlob(q *request) error {
	d := q.route.digest
	if q.r.Method == http.MethodHead {
		c, ok, err := s.lookupSized(q, d)
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

// headSizeWait bounds how long a HEAD waits for a fill of unknown size
// to end, so that its answer can carry a Content-Length (containerd takes
// a manifest's size from it). Past it, upstream's HEAD answers, and that
// may take up to upstream.DefaultFirstResponseBudget (25 s): 3 s + 25 s
// stays below containerd's 30 s wait for headers.
const headSizeWait = 3 * time.Second

// lookupSized is lookup for a HEAD. A fill whose source sent no size is
// waited for, at most headSizeWait, until its content is verified (its
// size is then known) and that content returned; a fill not verified in
// time, or that fails, is not found, so that the caller answers from
// upstream.
func (s *Server) lookupSized(q *request, d digest.Digest) (content, bool, error) {
	c, ok, err := s.lookup(d)
	if !ok || err != nil || c.info().size >= 0 {
		return c, ok, err
	}
	c.close()
	if f, filling := c.(*fillingContent); filling {
		ctx, cancel := context.WithTimeout(q.r.Context(), s.headSizeWait)
		_ = f.fill.Verified(ctx)
		cancel()
	}
	if c, ok, err = s.lookup(d); ok && c.info().size < 0 {
		c.close()
		return nil, false, nil
	}
	return c, ok, err
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
