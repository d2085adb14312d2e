package mirror

import (
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/pkg/upstream"
)

// relay answers from upstream without caching: a manifest stored with a
// media type the client does not accept, a HEAD of one not stored, tag
// lists and referrers too large to keep (passThrough). If d is set, the body must hash to d: it is passed
// through a verifying reader, so a lying upstream breaks the connection
// instead of delivering a whole wrong answer.
func (s *Server) relay(q *request, req upstream.Request, d digest.Digest, headers ...string) error {
	resp, err := s.ask(q.r.Context(), q, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upstreamError(q.registry, q.route.kind, resp.StatusCode, resp.Header)
	}
	q.rec.source = "upstream"
	copyHeaders(q.rec.Header(), resp.Header, headers...)
	var body io.Reader = resp.Body
	if d != "" {
		q.rec.Header().Set("Docker-Content-Digest", d.String())
		body = blobio.NewVerifier(resp.Body, d, resp.ContentLength)
	}
	q.rec.WriteHeader(http.StatusOK)
	if q.r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(q.rec, body); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

func copyHeaders(dst, src http.Header, keys ...string) {
	for _, k := range keys {
		if v := src.Get(k); v != "" {
			dst.Set(k, v)
		}
	}
}
