package mirror

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	// maxManifestSize is containerd's own limit on a manifest; anything
	// larger is not a manifest a client could use.
	maxManifestSize = 4 << 20
)

// serveManifest answers GET and HEAD of /v2/<name>/manifests/<reference>.
func (s *Server) serveManifest(q *request) error {
	accept := parseAccept(q.r.Header)
	d := q.route.digest
	var tag *tagRecord
	if q.route.tag != "" {
		rec, stale, err := s.resolveTag(q, accept)
		if err != nil {
			return err
		}
		if stale {
			s.metrics.staleTag()
			q.rec.Header().Set("Warning", staleWarning)
		}
		d, tag = rec.digest, &rec
	}
	c, ok, err := s.lookup(d)
	if err != nil {
		return err
	}
	if ok && !acceptable(accept, c.info().mediaType) {
		defer c.close()
		return s.relayManifest(q, d, accept)
	}
	if !ok && q.r.Method == http.MethodHead {
		if tag != nil {
			return headFromRecord(q, *tag)
		}
		return s.relayManifest(q, d, accept)
	}
	if !ok {
		if c, err = s.obtain(q, d, acceptHeader(accept)); err != nil {
			return err
		}
	}
	return s.serve(q, c, accept)
}

func (s *Server) relayManifest(q *request, d digest.Digest, accept []string) error {
	req := q.upstreamRequest(q.r.Method, d.String(), acceptHeader(accept))
	return s.relay(q, req, d, "Content-Type", "Content-Length")
}

func headFromRecord(q *request, rec tagRecord) error {
	h := q.rec.Header()
	h.Set("Content-Type", rec.mediaType)
	h.Set("Docker-Content-Digest", rec.digest.String())
	if rec.size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(rec.size, 10))
	}
	q.rec.source = "upstream"
	q.rec.WriteHeader(http.StatusOK)
	return nil
}

// parseAccept returns the media types a client accepts, without
// parameters, sorted and deduplicated, so that equivalent headers share a
// tag cache entry.
func parseAccept(h http.Header) []string {
	var types []string
	for _, v := range h.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if mt = strings.ToLower(strings.TrimSpace(mt)); mt != "" {
				types = append(types, mt)
			}
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}

func acceptHeader(accept []string) http.Header {
	if len(accept) == 0 {
		return nil
	}
	return http.Header{"Accept": {strings.Join(accept, ", ")}}
}

// acceptable reports whether a stored media type satisfies accept. No
// Accept header at all accepts anything; a stored entry without a media
// type (content fetched as a blob) satisfies only a wildcard.
func acceptable(accept []string, mediaType string) bool {
	if len(accept) == 0 {
		return mediaType != ""
	}
	for _, a := range accept {
		if a == "*/*" || (mediaType != "" && a == mediaType) {
			return true
		}
		if prefix, ok := strings.CutSuffix(a, "/*"); ok && strings.HasPrefix(mediaType, prefix+"/") {
			return true
		}
	}
	return false
}
