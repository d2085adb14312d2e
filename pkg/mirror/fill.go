package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// fillBufferSize is the copy buffer of one fill: large enough that a fast
// upstream costs few syscalls, small enough that many fills stay cheap.
const fillBufferSize = 256 << 10

// errCommitted tells a flight's callers to look in the store again: the
// digest was committed while they waited.
var errCommitted = errors.New("mirror: committed meanwhile")

// lookup finds d in the store: committed, or being filled. ok is false on
// a miss.
func (s *Server) lookup(d digest.Digest) (c content, ok bool, err error) {
	f, info, err := s.store.Open(d)
	if err == nil {
		return content{digest: d, size: info.Size, mediaType: info.MediaType, public: info.Public, file: f}, true, nil
	}
	if !errors.Is(err, diskstore.ErrNotFound) {
		return content{}, false, err
	}
	if fill := s.store.Filling(d); fill != nil {
		return s.fillContent(fill, s.peerOf(d)), true, nil
	}
	return content{}, false, nil
}

// fillContent is content served from a fill in progress, whose bytes
// come from peer ("" for upstream).
func (s *Server) fillContent(f *diskstore.Fill, peer string) content {
	return content{digest: f.Digest(), size: f.Size(), mediaType: f.MediaType(), public: f.Public(), fill: f, peer: peer}
}

// started is what a flight that started (or found) a fill gives its
// callers.
type started struct {
	fill *diskstore.Fill
	peer string // where its bytes come from; "" for upstream
}

// peerOf returns the peer that d's fill in progress reads from, or "".
func (s *Server) peerOf(d digest.Digest) string {
	if p, ok := s.fromPeer.Load(d); ok {
		return p.(string)
	}
	return ""
}

// maxOwnFlights bounds how often a client with credentials starts over
// after joining a flight that failed for want of credentials: the flight
// used its starter's, and this client's may do better.
const maxOwnFlights = 3

// fetch returns d from the store, starting a fill from upstream if it is
// missing. Concurrent callers for the same digest share one upstream GET:
// all but the first wait for it to answer, then read the same fill.
func (s *Server) fetch(q *request, d digest.Digest, header http.Header) (content, error) {
	retries := 0
	for {
		c, ok, err := s.lookup(d)
		if ok || err != nil {
			if c.fill != nil {
				s.metrics.joinedFill()
			}
			return c, err
		}
		ch := s.flights.DoChan(d.String(), func() (any, error) {
			return s.startFill(q, d, header)
		})
		select {
		case res := <-ch:
			if errors.Is(res.Err, errCommitted) {
				continue
			}
			if !q.startedFill && !q.auth.IsZero() && isAuthRequired(res.Err) && retries < maxOwnFlights {
				retries++
				continue
			}
			if res.Err != nil {
				return content{}, res.Err
			}
			if u, ok := res.Val.(*uncached); ok {
				if u.claimed.CompareAndSwap(false, true) {
					return uncachedContent(q, d, u.src, u.cancel), nil
				}
				return s.fetchUncached(q, d, header)
			}
			if !q.startedFill {
				s.metrics.joinedFill()
			}
			st := res.Val.(started)
			return s.fillContent(st.fill, st.peer), nil
		case <-q.r.Context().Done():
			go releaseUnclaimed(ch)
			return content{}, q.r.Context().Err()
		}
	}
}

// releaseUnclaimed waits for a flight this caller left and frees an
// uncached answer nobody took, rather than holding its upstream connection
// until the fill timeout.
func releaseUnclaimed(ch <-chan singleflight.Result) {
	res := <-ch
	if u, ok := res.Val.(*uncached); ok && u.claimed.CompareAndSwap(false, true) {
		u.src.body.Close()
		u.cancel()
	}
}

// startFill runs inside a flight. It checks the store again, because a fill
// may have been committed between the caller's miss and the start of this
// flight (the previous flight for d ends as soon as its fill starts), then
// asks upstream and starts copying the answer into a new fill. It returns
// a started fill, or an *uncached answer if the store cannot take it.
func (s *Server) startFill(q *request, d digest.Digest, header http.Header) (any, error) {
	// Filling first: a commit moves d from fills to the index, so in this
	// order a commit between the two checks is still seen by the second.
	if fill := s.store.Filling(d); fill != nil {
		return started{fill: fill, peer: s.peerOf(d)}, nil
	}
	if _, err := s.store.Stat(d); err == nil {
		return nil, errCommitted
	}
	// The fill outlives the request that started it: one client hanging up
	// must not cancel it for the others. Close ends it.
	ctx, cancel := context.WithTimeout(s.fillCtx, s.fillTimeout)
	src, err := s.openSource(ctx, q, d, header)
	if err != nil {
		cancel()
		return nil, err
	}
	fill, err := s.store.Begin(d, src.size, diskstore.Meta{MediaType: src.mediaType, Public: src.public})
	if cannotCache(err) {
		s.log.LogAttrs(ctx, slog.LevelInfo, "streaming uncached", slog.String("registry", q.registry),
			slog.String("digest", d.String()), slog.Int64("bytes", src.size), slog.Any("reason", err))
		return &uncached{src: src, cancel: cancel}, nil
	}
	if err != nil {
		src.body.Close()
		cancel()
		if errors.Is(err, diskstore.ErrExists) || errors.Is(err, diskstore.ErrFilling) {
			return nil, errCommitted // raced with another fill of d: look again
		}
		return nil, err
	}
	q.startedFill = true
	if src.peer != "" {
		s.fromPeer.Store(d, src.peer)
	}
	s.fills.Add(1)
	go func() {
		defer s.fills.Done()
		defer s.fromPeer.Delete(d)
		s.copyFill(ctx, cancel, q.registry, fill, src)
	}()
	return started{fill: fill, peer: src.peer}, nil
}

// checkFillResponse turns an unusable upstream answer into the client's
// error, closing its body.
func checkFillResponse(q *request, resp *http.Response) error {
	var err error
	switch {
	case resp.StatusCode != http.StatusOK:
		err = upstreamError(q.registry, q.route.kind, resp.StatusCode)
	case q.route.kind == ociref.KindManifests && resp.ContentLength > maxManifestSize:
		err = errorf(http.StatusBadGateway, codeManifestInvalid, "manifest from %s is larger than %d bytes", q.registry, maxManifestSize)
	}
	if err != nil {
		resp.Body.Close()
	}
	return err
}

// mediaTypeOf is the media type to store with content: the upstream
// Content-Type for manifests, none for blobs.
func mediaTypeOf(q *request, resp *http.Response) string {
	if q.route.kind != ociref.KindManifests {
		return ""
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt
}

// copyFill copies an upstream body into a fill and commits it.
func (s *Server) copyFill(ctx context.Context, cancel context.CancelFunc, registry string, fill *diskstore.Fill, src fillSource) {
	body := src.body
	s.metrics.fillStarted()
	defer s.metrics.fillEnded()
	defer cancel()
	defer body.Close()
	start := time.Now()
	n, err := io.CopyBuffer(fill, body, make([]byte, fillBufferSize))
	if err == nil {
		err = fill.Commit()
	} else {
		fill.Abort(err)
	}
	attrs := []slog.Attr{
		slog.String("registry", registry), slog.String("digest", fill.Digest().String()),
		slog.Int64("bytes", n), slog.Duration("duration", time.Since(start)),
	}
	switch {
	case src.peer != "" && (errors.Is(err, diskstore.ErrDigestMismatch) || errors.Is(err, diskstore.ErrSizeMismatch)):
		s.peerCorrupt(src.peer, fill.Digest())
		s.log.LogAttrs(ctx, slog.LevelWarn, "peer sent content not matching its digest", append(attrs, slog.String("peer", src.peer), slog.Any("error", err))...)
	case errors.Is(err, diskstore.ErrNoSpace):
		s.log.LogAttrs(ctx, slog.LevelInfo, "fill streamed uncached", append(attrs, slog.Any("reason", err))...)
	case err != nil:
		s.log.LogAttrs(ctx, slog.LevelWarn, "fill failed", append(attrs, slog.Any("error", err))...)
	default:
		s.log.LogAttrs(ctx, slog.LevelDebug, "fill committed", attrs...)
	}
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
		return nil, upstreamError(q.registry, q.route.kind, resp.StatusCode)
	}
	return resp, nil
}

// Close ends the fills still running and waits for them: each is aborted,
// its temporary file removed, and nothing partial is committed. Call it
// after the HTTP servers have shut down, when no client is left to read
// the fills; a fill that completed before is committed as usual.
func (s *Server) Close() {
	s.stopFills()
	s.fills.Wait()
}
