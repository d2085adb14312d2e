package mirror

import (
	"context"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

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
	resp, err := s.ask(ctx, q, q.upstreamRequest(http.MethodGet, d.String(), header))
	if err != nil {
		return fillSource{}, err
	}
	if err := checkFillResponse(q, resp.Response); err != nil {
		return fillSource{}, err
	}
	return upstreamSource(q, resp), nil
}

func upstreamSource(q *request, resp *upstream.Response) fillSource {
	return fillSource{
		body: resp.Body, size: resp.ContentLength, mediaType: mediaTypeOf(q, resp.Response),
		public: resp.Auth == upstream.AuthAnonymous,
	}
}
