package mirror

import (
	"context"
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
type uncached struct {
	src     fillSource
	cancel  context.CancelFunc
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

// uncachedContent wraps a download of d as content to serve.
func uncachedContent(d digest.Digest, src fillSource, cancel context.CancelFunc) *uncachedStream {
	return &uncachedStream{
		contentInfo: contentInfo{digest: d, size: src.size, mediaType: src.mediaType, public: src.public, whole: true, arriving: true},
		body:        blobio.NewVerifier(src.body, d, src.size),
		release: sync.OnceFunc(func() {
			src.body.Close()
			cancel()
		}),
	}
}

// fetchUncached fetches d from upstream for this client alone.
func (s *Server) fetchUncached(q *request, d digest.Digest, header http.Header) (content, error) {
	ctx, cancel := context.WithTimeout(q.r.Context(), s.fillTimeout)
	src, err := s.openUpstream(ctx, q, d, header)
	if err != nil {
		cancel()
		return nil, err
	}
	return uncachedContent(d, src, cancel), nil
}
