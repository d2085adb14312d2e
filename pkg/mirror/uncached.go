package mirror

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/pkg/diskstore"
)

// uncached is an upstream answer that the store could not take (larger
// than the maximum size, disk full, read-only store). It is streamed to
// one client, verified, and not kept. Other clients that joined the same
// flight fetch their own copy: the blob cannot be shared through the
// store, and holding it in memory for them could be gigabytes.
//
// The download holds its fill slot (if it took one) until the stream is
// closed: cancel frees it, and is called exactly once, by the client that
// claimed the stream when it closes it (uncachedContent), or by release
// when nobody claimed it.
type uncached struct {
	src     fillSource
	cancel  func() // ends the download's context and frees its slot
	claimed atomic.Bool
}

// claim reports whether the caller may stream u: the first to ask.
func (u *uncached) claim() bool { return u.claimed.CompareAndSwap(false, true) }

// release frees u's download if nobody claimed it.
func (u *uncached) release() {
	if u.claim() {
		u.src.body.Close()
		u.cancel()
	}
}

// cannotCache reports whether a Begin error means "stream it uncached".
func cannotCache(err error) bool {
	return errors.Is(err, diskstore.ErrTooLarge) || errors.Is(err, diskstore.ErrNoSpace)
}

// uncachedContent wraps a download of d as content to serve. cancel
// ends the download and frees its slot; it runs once, when the stream is
// closed.
func uncachedContent(d digest.Digest, src fillSource, cancel func()) *uncachedStream {
	return &uncachedStream{
		contentInfo: contentInfo{digest: d, size: src.size, mediaType: src.mediaType, public: src.public, whole: true, arriving: true},
		body:        blobio.NewVerifier(src.body, d, src.size),
		release: sync.OnceFunc(func() {
			src.body.Close()
			cancel()
		}),
	}
}

// fetchUncached fetches d from upstream for this client alone. A blob
// download takes a fill slot like any fill, and holds it until the
// stream is closed. Like a fill, it ends when it takes in nothing for the
// fill timeout (progress.go), never while it makes progress.
func (s *Server) fetchUncached(q *request, d digest.Digest, header http.Header) (content, error) {
	ctx, cancelCtx, touch := progressContext(q.r.Context(), s.fillTimeout, s.now)
	release, err := s.fillSlot(q, ctx)
	if err != nil {
		cancelCtx()
		return nil, err
	}
	cancel := func() { cancelCtx(); release() }
	src, err := s.openUpstream(ctx, q, d, header)
	if err != nil {
		cancel()
		return nil, err
	}
	src.body = progressBody{ReadCloser: src.body, touch: touch}
	return uncachedContent(d, src, cancel), nil
}
