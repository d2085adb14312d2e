package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

const (
	// maxManifestSize is containerd's own limit on a manifest; anything
	// larger is not a manifest a client could use.
	maxManifestSize = 4 << 20
	// tagResolveTimeout bounds one upstream tag resolution, which runs on
	// its own context so that one client hanging up does not fail the
	// others waiting on it. It stays below containerd's 30 s header wait.
	tagResolveTimeout = 20 * time.Second
	// staleWarning marks an answer served from a tag record that upstream
	// could not confirm (RFC 9111's Warning code 110).
	staleWarning = `110 nodecache "Response is Stale"`
)

// tagRecord is what a tag resolved to, for one set of accepted media types.
type tagRecord struct {
	digest    digest.Digest
	mediaType string
	size      int64
}

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
	if ok && !acceptable(accept, c.mediaType) {
		c.close()
		return s.relayManifest(q, d, accept)
	}
	if !ok && q.r.Method == http.MethodHead {
		if tag != nil {
			return headFromRecord(q, *tag)
		}
		return s.relayManifest(q, d, accept)
	}
	if !ok {
		if c, err = s.fetch(q, d, acceptHeader(accept)); err != nil {
			return err
		}
	}
	return s.serveFetched(q, c, acceptHeader(accept))
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

// resolveTag returns the digest a tag points to for the accepted media
// types: from the tag cache while fresh, else from upstream, coalescing
// concurrent resolutions. If upstream is unreachable or failing, the last
// known answer is used and stale is true.
//
// An answer upstream gave only for the client's credentials is kept under
// a key that includes them, so no other client is told where a private
// tag points.
func (s *Server) resolveTag(q *request, accept []string) (rec tagRecord, stale bool, err error) {
	shared := q.registry + "/" + q.route.name + ":" + q.route.tag + "|" + strings.Join(accept, ",")
	keys := []string{shared}
	if q.identity != "" {
		keys = []string{shared + "|" + q.identity, shared}
	}
	for _, k := range keys {
		if rec, fresh, ok := s.tags.Get(k); ok && fresh {
			return rec, false, nil
		}
	}
	v, err, _ := s.tagsSF.Do(keys[0], func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(q.r.Context()), tagResolveTimeout)
		defer cancel()
		rec, auth, err := s.askTag(ctx, q, accept)
		if err == nil {
			key := shared
			if auth == upstream.AuthRequest {
				key = keys[0]
			}
			s.tags.Set(key, rec)
		}
		return rec, err
	})
	if err == nil {
		return v.(tagRecord), false, nil
	}
	if isTransient(err) {
		for _, k := range keys {
			rec, _, ok := s.tags.Get(k)
			if !ok {
				continue
			}
			s.log.LogAttrs(q.r.Context(), slog.LevelWarn, "serving stale tag",
				slog.String("registry", q.registry), slog.String("repository", q.route.name),
				slog.String("tag", q.route.tag), slog.String("digest", rec.digest.String()), slog.Any("error", err))
			return rec, true, nil
		}
	}
	return tagRecord{}, false, err
}

// askTag resolves a tag upstream with a HEAD, which costs the registry no
// download (and is not counted by Docker Hub's pull limit). Registries that
// do not send the digest on HEAD get a GET.
// It also says which credentials upstream needed.
func (s *Server) askTag(ctx context.Context, q *request, accept []string) (tagRecord, upstream.AuthSource, error) {
	req := q.upstreamRequest(http.MethodHead, q.route.tag, acceptHeader(accept))
	resp, err := s.ask(ctx, q, req)
	if err != nil {
		return tagRecord{}, 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return tagRecord{}, 0, upstreamError(q.registry, ociref.KindManifests, resp.StatusCode)
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err == nil && diskstore.Check(d) == nil {
		return tagRecord{digest: d, mediaType: mediaType, size: resp.ContentLength}, resp.Auth, nil
	}
	return s.getTag(ctx, q, req)
}

// getTag fetches a manifest by tag, computes its digest and stores it.
func (s *Server) getTag(ctx context.Context, q *request, req upstream.Request) (tagRecord, upstream.AuthSource, error) {
	req.Method = http.MethodGet
	resp, err := s.ask(ctx, q, req)
	if err != nil {
		return tagRecord{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return tagRecord{}, 0, upstreamError(q.registry, ociref.KindManifests, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return tagRecord{}, 0, errorf(http.StatusBadGateway, codeUnavailable, "reading manifest from %s: %v", q.registry, err)
	}
	if len(body) > maxManifestSize {
		return tagRecord{}, 0, errorf(http.StatusBadGateway, codeManifestInvalid, "manifest from %s is larger than %d bytes", q.registry, maxManifestSize)
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	rec := tagRecord{digest: digest.FromBytes(body), mediaType: mediaType, size: int64(len(body))}
	if resp.Auth != upstream.AuthAnonymous {
		s.access.Set(q.accessKey(rec.digest), struct{}{})
	}
	meta := diskstore.Meta{MediaType: mediaType, Public: resp.Auth == upstream.AuthAnonymous}
	if fill, err := s.store.Begin(rec.digest, rec.size, meta); err == nil {
		if _, err := fill.Write(body); err == nil {
			fill.Commit()
		}
	}
	return rec, resp.Auth, nil
}

// relay answers from upstream without caching: a manifest stored with a
// media type the client does not accept, a HEAD of one not stored, tag
// lists and referrers. If d is set, the body must hash to d: it is passed
// through a verifying reader, so a lying upstream breaks the connection
// instead of delivering a whole wrong answer.
func (s *Server) relay(q *request, req upstream.Request, d digest.Digest, headers ...string) error {
	resp, err := s.ask(q.r.Context(), q, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upstreamError(q.registry, q.route.kind, resp.StatusCode)
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

// isTransient reports whether err means upstream could not answer now, as
// opposed to answering no: the condition for serving a stale tag.
func isTransient(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status >= 500
	}
	return errors.Is(err, upstream.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)
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
