package mirror

import (
	"io"
	"net/http"
	"net/url"
	"strings"

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
	if link := q.rec.Header().Get("Link"); link != "" {
		q.rec.Header().Set("Link", q.sameRegistry(link))
	}
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

// sameRegistry makes upstream's Link to the next page of a tag list or of
// referrers (</v2/NAME/tags/list?last=T&n=N>; rel="next") lead back to
// the registry this request named. As upstream wrote it, the link names
// no registry: followed, it would be answered from the default registry,
// whose repository of the same name is another one. The registry goes
// back where the request had it, first in the path, else as ns. A link
// that is not such a path (another host, or none to parse) is left as it
// is: it does not come back here.
func (q *request) sameRegistry(link string) string {
	target, params, ok := strings.Cut(link, ">")
	rest, isPath := strings.CutPrefix(target, "</v2/")
	if !ok || !isPath {
		return link
	}
	u, err := url.Parse("/v2/" + rest)
	if err != nil {
		return link
	}
	if q.route.host != "" {
		u.Path = "/v2/" + q.registry + strings.TrimPrefix(u.Path, "/v2")
		u.RawPath = ""
	} else {
		v := u.Query()
		v.Set("ns", q.registry)
		u.RawQuery = v.Encode()
	}
	return "<" + u.String() + ">" + params
}
