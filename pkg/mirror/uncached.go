package mirror

import (
	"context"
	"errors"
	"hash"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

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
		body:        newVerifyReader(src.body, d, src.size),
		release: func() {
			src.body.Close()
			cancel()
		},
	}
}

// fetchUncached fetches d from upstream for this client alone.
func (s *Server) fetchUncached(q *request, d digest.Digest, header http.Header) (content, error) {
	ctx, cancel := context.WithTimeout(q.r.Context(), s.fillTimeout)
	resp, err := s.ask(ctx, q, q.upstreamRequest(http.MethodGet, d.String(), header))
	if err == nil {
		err = checkFillResponse(q, resp.Response)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return uncachedContent(d, upstreamSource(q, resp), cancel), nil
}

// verifyReader passes an upstream body through while hashing it, and holds
// back the last byte until the digest and size are checked, so a client
// never receives a complete response with wrong content.
type verifyReader struct {
	src   io.Reader
	hash  hash.Hash
	want  digest.Digest
	size  int64 // expected, or -1
	n     int64
	buf   []byte
	ready []byte // verified-safe bytes of buf not yet returned
	held  []byte // the last byte read, passed on only after the check
	err   error  // io.EOF once verified, or why it failed
}

// newVerifyReader checks src against d and, if size is not -1, size.
func newVerifyReader(src io.Reader, d digest.Digest, size int64) *verifyReader {
	return &verifyReader{src: src, hash: d.Algorithm().Hash(), want: d, size: size}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	for len(v.ready) == 0 {
		if v.err != nil {
			return 0, v.err
		}
		v.fill()
	}
	n := copy(p, v.ready)
	v.ready = v.ready[n:]
	return n, nil
}

// fill reads the next chunk into buf, after the held byte.
func (v *verifyReader) fill() {
	if v.buf == nil {
		v.buf = make([]byte, 32<<10)
	}
	off := copy(v.buf, v.held)
	n, err := v.src.Read(v.buf[off:])
	v.hash.Write(v.buf[off : off+n])
	v.n += int64(n)
	total := off + n
	switch {
	case err == io.EOF && v.size >= 0 && v.n != v.size:
		v.err = diskstore.ErrSizeMismatch
	case err == io.EOF && digest.NewDigest(v.want.Algorithm(), v.hash) != v.want:
		v.err = diskstore.ErrDigestMismatch
	case err == io.EOF:
		v.ready, v.held, v.err = v.buf[:total], nil, io.EOF
	case err != nil:
		v.err = err
	case total > 0:
		v.ready = v.buf[:total-1]
		v.held = append(v.held[:0], v.buf[total-1])
	}
}
