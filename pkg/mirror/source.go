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
	return fillSource{
		body: resp.Body, size: resp.ContentLength, mediaType: mediaTypeOf(q, resp.Response),
		public: resp.Auth == upstream.AuthAnonymous,
	}, nil
}

// checkFillResponse turns an unusable upstream answer into the client's
// error, closing its body.
func checkFillResponse(q *request, resp *http.Response) error {
	var err error
	switch {
	case resp.StatusCode != http.StatusOK:
		err = upstreamError(q.registry, q.route.kind, resp.StatusCode)
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
