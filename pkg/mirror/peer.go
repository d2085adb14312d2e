package mirror

import (
	"context"

	"github.com/opencontainers/go-digest"
)

// peerSource asks the peer node that owns d for it. ok is false when
// there are no peers, this node owns d, or the owner cannot serve it; the
// fill then goes to upstream.
func (s *Server) peerSource(ctx context.Context, q *request, d digest.Digest) (src fillSource, ok bool) {
	return fillSource{}, false
}

// peerCorrupt notes that peer sent bytes that did not match d.
func (s *Server) peerCorrupt(peer string, d digest.Digest) {}
