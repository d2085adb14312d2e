package mirror

import (
	"context"
	"io"
	"mime"
	"net/http"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/upstream"
)

// fillSource is where the bytes of a fill come from: upstream, or the
// peer node that owns the digest.
type fillSource struct {
	body      io.ReadCloser
	size      int64 // -1 if not known
	mediaType string
	public    bool   // fetched without credentials
	peer      string // the peer it comes from; "" for upstream
}

// openSource starts the download of d for a fill: from the owner peer for
// a blob, if there is one and it answers, else from upstream.
func (s *Server) openSource(ctx context.Context, q *request, d digest.Digest, header http.Header) (fillSource, error) {
	if q.route.kind == ociref.KindBlobs {
		if src, ok := s.peerSource(ctx, q, d); ok {
			return src, nil
		}
	}
	return s.openUpstream(ctx, q, d, header)
}

// openUpstream starts the download of d from upstream: a GET whose answer
// must be the content, for a fill or for an uncached download.
func (s *Server) openUpstream(ctx context.Context, q *request, d digest.Digest, header http.Header) (fillSource, error) {
	resp, err := s.ask(ctx, q, q.upstreamRequest(http.MethodGet, d.String(), header))
	if err != nil {
		return fillSource{}, err
	}
	if err := checkFillResponse(q, resp.Response); err != nil {
		return fillSource{}, err
	}
	body := resp.Body
	if q.route.kind == ociref.KindManifests {
		body = capManifest(q, body)
	}
	return fillSource{
		body: body, size: resp.ContentLength, mediaType: mediaTypeOf(q, resp.Response),
		public: resp.Auth == upstream.AuthAnonymous,
	}, nil
}

// capManifest holds a manifest's body to maxManifestSize whatever its
// headers say: checkFillResponse refuses a larger Content-Length, and a
// body without one fails past the cap, so its fill is aborted (its
// clients' connections cut) and nothing is cached.
func capManifest(q *request, body io.ReadCloser) io.ReadCloser {
	return &cappedBody{ReadCloser: body, left: maxManifestSize,
		err: ocierr.Errorf(http.StatusBadGateway, ocierr.CodeManifestInvalid, "manifest from %s is larger than %d bytes", q.registry, maxManifestSize)}
}

// cappedBody passes left bytes, and fails with err rather than pass one
// more.
type cappedBody struct {
	io.ReadCloser
	left int64 // -1 once past the cap
	err  error
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, c.err
	}
	// One byte beyond the cap tells a body at the cap from one past it.
	n, err := c.ReadCloser.Read(p[:min(int64(len(p)), c.left+1)])
	if int64(n) > c.left {
		n, c.left = int(c.left), -1
		return n, c.err
	}
	c.left -= int64(n)
	return n, err
}

// checkFillResponse turns an unusable upstream answer into the client's
// error, closing its body.
func checkFillResponse(q *request, resp *http.Response) error {
	var err error
	switch {
	case resp.StatusCode != http.StatusOK:
		err = upstreamError(q.registry, q.route.kind, resp.StatusCode, resp.Header)
	case q.route.kind == ociref.KindManifests && resp.ContentLength > maxManifestSize:
		err = ocierr.Errorf(http.StatusBadGateway, ocierr.CodeManifestInvalid, "manifest from %s is larger than %d bytes", q.registry, maxManifestSize)
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
