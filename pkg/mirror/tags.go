package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

const (
	// tagResolveTimeout bounds one upstream tag resolution, which runs on
	// its own context so that one client hanging up does not fail the
	// others waiting on it. It stays below containerd's 30 s header wait,
	// and above the upstream client's first-response budget: a registry
	// that takes connections and never answers must spend that budget,
	// which marks it down (upstream.ErrCircuitOpen), before this context
	// ends the request, which would count for nothing (a caller that gave
	// up is not an outage). At 20 s, below the budget, a tag request to
	// such a registry waited 20 s every time and never marked it down.
	tagResolveTimeout = upstream.DefaultFirstResponseBudget + 2*time.Second
	// maxTagRecords bounds the tag records, and so their memory: a key is
	// at most a registry, a 255-byte name, a 128-byte tag, the manifest
	// types of Accept (parseAccept) and a 64-byte identity, a record a
	// digest and a media type of at most maxMediaTypeLength, under 2 KiB
	// in all, so 16,384 records stay under 32 MiB however they are asked
	// for (a few MiB in practice). A node pulls far fewer distinct tags
	// within --ttl; the least recently used go first.
	maxTagRecords = 1 << 14
	// maxMediaTypeLength bounds a media type kept from upstream's
	// Content-Type: RFC 6838 allows 127 characters for each of type and
	// subtype. A longer one is not kept.
	maxMediaTypeLength = 255
	// staleWarning marks an answer served from a tag record that upstream
	// could not confirm (RFC 9111's Warning code 110).
	staleWarning = `110 nodecache "Response is Stale"`
)

// tagRecord is what a tag resolved to, for one set of accepted media types.
type tagRecord struct {
	digest    digest.Digest
	mediaType string
	size      int64
	missing   bool // upstream answered 404
}

// resolveTag returns the digest a tag points to for the accepted media
// types: from the tag records while fresh, else from upstream, coalescing
// concurrent resolutions. If upstream is unreachable or failing (or marked
// down), the last known answer is used and stale is true. Upstream's 404
// is an answer too: it is recorded, and answered as a 404 (an error).
//
// An answer upstream gave only for the client's credentials is kept in
// memory under a key that includes them, so no other client is told where
// a private tag points, and it never reaches the disk.
func (s *Server) resolveTag(q *request, accept []string) (rec tagRecord, stale bool, err error) {
	shared := q.registry + "/" + q.route.name + ":" + q.route.tag + "|" + strings.Join(accept, ",")
	private := ""
	if q.identity != "" {
		private = shared + "|" + q.identity
	}
	if private != "" {
		if rec, fresh, ok := s.privateTags.getAt(private, s.clock(q)); ok && fresh {
			return rec, false, rec.notFound(q)
		}
	}
	if rec, fresh, ok := s.sharedTag(shared, private, s.clock(q)); ok && fresh {
		return rec, false, rec.notFound(q)
	}
	v, err, _ := s.tagsSF.Do(shared+"|"+q.identity, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(q.r.Context()), tagResolveTimeout)
		defer cancel()
		rec, auth, err := s.askTag(ctx, q, accept)
		if err == nil {
			if auth == upstream.AuthRequest {
				s.privateTags.Set(private, rec)
			} else {
				s.tags.Set(shared, rec)
			}
		}
		return rec, err
	})
	q.forgetClock() // it may have waited on upstream
	if err == nil {
		rec := v.(tagRecord)
		return rec, false, rec.notFound(q)
	}
	if !isTransient(err) {
		return tagRecord{}, false, err
	}
	rec, ok := s.staleTag(shared, private, s.clock(q))
	if !ok {
		return tagRecord{}, false, err
	}
	if !errors.Is(err, upstream.ErrCircuitOpen) { // the circuit logs once, not per request
		s.log.LogAttrs(q.r.Context(), slog.LevelWarn, "serving stale tag",
			slog.String("registry", q.registry), slog.String("repository", q.route.name),
			slog.String("tag", q.route.tag), slog.String("digest", rec.digest.String()),
			slog.Bool("not_found", rec.missing), slog.Any("error", err))
	}
	return rec, true, rec.notFound(q)
}

// staleTag returns the client's own record if it has one young enough
// to serve when upstream cannot answer, else the shared one.
func (s *Server) staleTag(shared, private string, now time.Time) (tagRecord, bool) {
	if private != "" {
		if rec, _, ok := s.privateTags.getAt(private, now); ok {
			return rec, true
		}
	}
	rec, _, ok := s.sharedTag(shared, private, now)
	return rec, ok
}

// sharedTag is the shared record, as it applies to the client: a 404
// answered without credentials says nothing to a client that has some
// (a registry may hide a private repository from anonymous requests), so
// such a client does not get it.
func (s *Server) sharedTag(shared, private string, now time.Time) (rec tagRecord, fresh, ok bool) {
	rec, fresh, ok = s.tags.getAt(shared, now)
	if ok && rec.missing && private != "" {
		return tagRecord{}, false, false
	}
	return rec, fresh, ok
}

// notFound is the error for a record of upstream's 404, nil for others.
func (rec tagRecord) notFound(q *request) error {
	if !rec.missing {
		return nil
	}
	return upstreamError(q.registry, ociref.KindManifests, http.StatusNotFound, nil)
}

// askTag resolves a tag upstream with a HEAD, which costs the registry no
// download (and is not counted by Docker Hub's pull limit). Registries that
// do not send the digest on HEAD get a GET. Upstream's 404 is a record
// whose missing is set.
// It also says which credentials upstream needed.
func (s *Server) askTag(ctx context.Context, q *request, accept []string) (tagRecord, upstream.AuthSource, error) {
	req := q.upstreamRequest(http.MethodHead, q.route.tag, acceptHeader(accept))
	resp, err := s.ask(ctx, q, req)
	if err != nil {
		return tagRecord{}, 0, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return tagRecord{missing: true, size: -1}, resp.Auth, nil
	}
	if resp.StatusCode != http.StatusOK {
		return tagRecord{}, 0, upstreamError(q.registry, ociref.KindManifests, resp.StatusCode, resp.Header)
	}
	mediaType := recordedMediaType(resp.Header)
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err == nil && diskstore.Check(d) == nil {
		return tagRecord{digest: d, mediaType: mediaType, size: resp.ContentLength}, resp.Auth, nil
	}
	return s.getTag(ctx, q, req)
}

// recordedMediaType is the media type of upstream's Content-Type, as a
// tag record keeps it: without parameters, "" if longer than
// maxMediaTypeLength.
func recordedMediaType(h http.Header) string {
	mediaType, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if len(mediaType) > maxMediaTypeLength {
		return ""
	}
	return mediaType
}

// getTag resolves a tag with a GET, for registries whose HEAD gives no
// usable digest: it reads the manifest, computes its digest, and keeps it
// in the store through the fill path (keepManifest), so that the request
// that follows for the digest finds it there.
func (s *Server) getTag(ctx context.Context, q *request, req upstream.Request) (tagRecord, upstream.AuthSource, error) {
	req.Method = http.MethodGet
	resp, err := s.ask(ctx, q, req)
	if err != nil {
		return tagRecord{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return tagRecord{}, 0, upstreamError(q.registry, ociref.KindManifests, resp.StatusCode, resp.Header)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return tagRecord{}, 0, ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "reading manifest from %s: %v", q.registry, err)
	}
	if len(body) > maxManifestSize {
		return tagRecord{}, 0, ocierr.Errorf(http.StatusBadGateway, ocierr.CodeManifestInvalid, "manifest from %s is larger than %d bytes", q.registry, maxManifestSize)
	}
	mediaType := recordedMediaType(resp.Header)
	rec := tagRecord{digest: digest.FromBytes(body), mediaType: mediaType, size: int64(len(body))}
	if resp.Auth != upstream.AuthAnonymous {
		s.access.Set(q.accessKey(rec.digest), struct{}{})
	}
	s.keepManifest(ctx, q, rec.digest, fillSource{
		body: io.NopCloser(bytes.NewReader(body)), size: rec.size, mediaType: mediaType,
		public: resp.Auth == upstream.AuthAnonymous,
	})
	return rec, resp.Auth, nil
}

// keepManifest fills the store with a manifest already read, through a
// flight for d like any fill: a fill of d in progress or committed is
// left alone, and the bytes are verified and committed by the store. It
// returns once a fill it began has its content verified, so that the
// store serves d (committed, or from the verified fill) when the tag's
// answer is served, as before the tag had a fill. A fill
// of d that another client began is not waited for: it may be as slow as
// that client's upstream, and the tag's answer needs only the digest.
// Keeping is best effort: a store that cannot take d leaves the request
// for d to fetch it.
func (s *Server) keepManifest(ctx context.Context, q *request, d digest.Digest, src fillSource) {
	l, started, err := s.flights.fly(ctx, d, func() (landing, error) {
		return s.startFill(q, d, func(context.Context) (fillSource, error) { return src, nil })
	})
	if err != nil || !started {
		return
	}
	switch l.kind {
	case landedUncached:
		l.stream.release()
	case landedFill:
		if l.began {
			// Verified, not committed: the commit waits for the store's
			// fills to go quiet, and a lookup finds the verified fill.
			_ = l.fill.fill.Verified(ctx)
		}
	}
}

// isTransient reports whether err means upstream could not answer now, as
// opposed to answering no: the condition for serving a stale tag.
func isTransient(err error) bool {
	var e *ocierr.Error
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status >= 500
	}
	return errors.Is(err, upstream.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)
}

// Tag is a tag record as the operations view lists it.
type Tag struct {
	Registry, Repository, Tag string
	Digest                    digest.Digest
	MediaType                 string
}

// Tags calls fn with every tag record any client may be told of: records
// kept for one client's credentials are left out.
func (s *Server) Tags(fn func(Tag)) {
	s.tags.Each(func(k string, rec tagRecord) {
		parts := strings.Split(k, "|")
		if len(parts) != 2 { // registry/name:tag|accept; a third part is an identity
			return
		}
		registry, nameTag, ok := strings.Cut(parts[0], "/")
		i := strings.LastIndexByte(nameTag, ':')
		if !ok || i < 0 {
			return
		}
		fn(Tag{Registry: registry, Repository: nameTag[:i], Tag: nameTag[i+1:], Digest: rec.digest, MediaType: rec.mediaType})
	})
}
