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
	// others waiting on it. It stays below containerd's 30 s header wait.
	tagResolveTimeout = 20 * time.Second
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
// returns once a fill it began has ended, so that the store holds d
// when the tag's answer is served, as before the tag had a fill. A fill
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
			waitForEnd(ctx, l.fill.fill)
		}
	}
}

// waitForEnd returns once f is committed or aborted, or ctx ends.
func waitForEnd(ctx context.Context, f *diskstore.Fill) { _ = f.Ended(ctx) }

// isTransient reports whether err means upstream could not answer now, as
// opposed to answering no: the condition for serving a stale tag.
func isTransient(err error) bool {
	var e *ocierr.Error
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status >= 500
	}
	return errors.Is(err, upstream.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)
}
