package mirror

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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
	lookup := s.lookupManifest
	if q.r.Method == http.MethodHead {
		lookup = func(q *request, d digest.Digest) (content, bool, error) {
			if c, ok := s.fromMemory(q, d); ok {
				return c, true, nil
			}
			return s.lookupSized(q, d)
		}
	}
	c, ok, err := lookup(q, d)
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

// manifestTypes are the media types of manifests a client can name in
// Accept, and the wildcards that match them (as acceptable reads them).
// Only these are kept from a client's Accept: they are what upstream
// chooses among, and the set of them is the key of a tag record, so a
// client cannot grow the records by sending other types.
var manifestTypes = map[string]bool{
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.v1+json":      true,
	"application/vnd.docker.distribution.manifest.v1+prettyjws": true,
	"*/*":           true,
	"application/*": true,
}

// acceptNoManifest stands for an Accept that names types, none of them a
// manifest's: such a client accepts no stored manifest (unlike a client
// that sent no Accept, which accepts any), its tag records are its own,
// and upstream is asked without an Accept. It is not a media type, so
// acceptable matches nothing with it.
const acceptNoManifest = "none"

// parseAccept returns the manifest media types a client accepts
// (manifestTypes), without parameters, sorted and deduplicated, so that
// equivalent headers share a tag record; acceptNoManifest alone if the
// client named only other types. The slice is shared: callers must not
// modify it.
func parseAccept(h http.Header) []string {
	vs := h["Accept"]
	if len(vs) != 1 || len(vs[0]) > maxAcceptCacheKey {
		return parseAcceptValues(vs)
	}
	if types, ok := acceptCache.Load(vs[0]); ok {
		return types.([]string)
	}
	types := parseAcceptValues(vs)
	if acceptCached.Add(1) <= maxAcceptCache {
		acceptCache.Store(vs[0], types)
	}
	return types
}

const (
	// maxAcceptCache bounds the Accept headers whose parse is kept: the
	// clients of a node send a handful (one per client program and
	// version), so 256 keeps them all, while a client sending a new one
	// on every request cannot grow the cache past a few hundred KiB.
	maxAcceptCache = 256
	// maxAcceptCacheKey is the longest Accept header kept: containerd's
	// is about 300 bytes, the usual ones are shorter.
	maxAcceptCacheKey = 1 << 10
)

// acceptCache maps an Accept header, as sent, to parseAcceptValues of
// it; acceptCached counts the entries stored (never more than
// maxAcceptCache).
var (
	acceptCache  sync.Map
	acceptCached atomic.Int64
)

func parseAcceptValues(vs []string) []string {
	var types []string
	named := false
	for _, v := range vs {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			named = named || mt != ""
			if manifestTypes[mt] {
				types = append(types, mt)
			}
		}
	}
	if named && len(types) == 0 {
		return []string{acceptNoManifest}
	}
	slices.Sort(types)
	return slices.Clip(slices.Compact(types))
}

// acceptHeader is the Accept sent upstream for accept: its types, or none.
func acceptHeader(accept []string) http.Header {
	types := slices.DeleteFunc(slices.Clone(accept), func(t string) bool { return t == acceptNoManifest })
	if len(types) == 0 {
		return nil
	}
	return http.Header{"Accept": {strings.Join(types, ", ")}}
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
