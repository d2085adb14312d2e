package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/peer"
)

// Peers is what the mirror needs to fetch blobs from the node that owns
// them: who owns a digest, and a client to fetch it with.
type Peers struct {
	Members *peer.Membership
	Client  *peer.Client
}

// WithPeers fills blobs from the peer node that owns them before going to
// upstream. Without it, or with a zero Peers, every fill goes to upstream.
func WithPeers(p Peers) Option {
	return func(s *Server) {
		if p.Members != nil && p.Client != nil {
			s.peers = &p
		}
	}
}

// Allowed reports whether registry is on the allow-list: the peer handler
// refuses the others, so no peer can make this node contact a registry it
// would not contact for its own clients.
func (s *Server) Allowed(registry string) bool { return s.allowed[strings.ToLower(registry)] }

// peerSource asks the peer node that owns d for it. ok is false when
// there are no peers, this node owns d, or the owner cannot serve it; the
// fill then goes to upstream.
//
// Peers are asked only for blobs a client asked for without credentials:
// a peer serves only public content, and content behind credentials must
// come from upstream, which checks them. A request that itself came from
// a peer never reaches a peer again, so requests cannot loop.
func (s *Server) peerSource(ctx context.Context, q *request, d digest.Digest) (src fillSource, ok bool) {
	if s.peers == nil || q.route.kind != ociref.KindBlobs || !q.auth.IsZero() || peer.IsPeerRequest(q.r) {
		return fillSource{}, false
	}
	owner, self := s.peers.Members.Owner(d)
	if self {
		return fillSource{}, false
	}
	body, size, err := s.peers.Client.Fetch(ctx, owner, q.registry, q.route.name, d, 0)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelDebug, "peer fetch failed; filling from upstream",
			slog.String("peer", owner), slog.String("digest", d.String()), slog.Any("error", err))
		return fillSource{}, false
	}
	rest := &upstreamRest{s: s, q: q, d: d}
	rb := blobio.NewResumer(ctx, blobio.Transfer{
		Body: body, From: owner, Size: size, Sources: []blobio.Source{rest},
		Budget: peerContinuations,
		OnBreak: func(from string, offset int64, err error) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "peer transfer broke; continuing from upstream",
				slog.String("peer", from), slog.String("digest", d.String()), slog.Int64("offset", offset), slog.Any("error", err))
		},
	})
	return fillSource{body: rb, size: size, public: true, peer: owner}, true
}

// peerCorrupt notes that peer sent bytes that did not match d.
func (s *Server) peerCorrupt(peer string, d digest.Digest) {
	if s.peers != nil {
		s.peers.Client.ReportCorrupt(peer, d)
	}
}

// A fill from a peer is the owner's body in a blobio.Resumer whose one
// continuation is upstream: if the peer's transfer breaks, the fill
// continues from upstream at the byte reached, so a peer that dies
// mid-transfer costs the rest of the blob from upstream, not the whole
// of it. Upstream's
// body resumes its own breaks (pkg/upstream), so the switch happens once:
// that is the budget. The fill still verifies every byte against the
// digest.
const peerContinuations = 1

// upstreamRest is upstream as the source of the rest of d, asked with the
// same authority the fill would have used had it gone to upstream at once.
type upstreamRest struct {
	s *Server
	q *request
	d digest.Digest
}

func (u *upstreamRest) Name() string { return "upstream " + u.q.registry }

// Open asks upstream for d from offset on. pkg/upstream answers a
// "Range: bytes=N-" with exactly the bytes from N, or an error.
func (u *upstreamRest) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	want := http.StatusOK
	var h http.Header
	if offset > 0 {
		want = http.StatusPartialContent
		h = http.Header{"Range": {blobio.RangeFrom(offset)}}
	}
	resp, err := u.s.ask(ctx, u.q, u.q.upstreamRequest(http.MethodGet, u.d.String(), h))
	if err != nil {
		return nil, fmt.Errorf("blob %s: continuing from upstream: %w", u.d, err)
	}
	if resp.StatusCode != want {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s: continuing from upstream: %w", u.d,
			upstreamError(u.q.registry, ociref.KindBlobs, resp.StatusCode, resp.Header))
	}
	return resp.Body, nil
}

// ServePeer implements peer.Fetcher: it serves blob d of repo in registry
// to a peer, from the store or by filling it like a local client's
// request would (joining a fill of d in progress), honouring Range. The
// request carries the peer header, so the fill it may start never asks a
// peer. Only public content is served: a peer request carries no client
// credentials that upstream could check.
func (s *Server) ServePeer(w http.ResponseWriter, r *http.Request, registry, repo string, d digest.Digest) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, source: "none"}
	q := &request{
		rec: rec, r: r, registry: registry,
		route: route{kind: ociref.KindBlobs, name: repo, digest: d},
	}
	if err := s.servePeer(q); err != nil {
		writeError(rec, r, peerError(err))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "peer request",
		slog.String("method", r.Method), slog.String("peer", r.RemoteAddr),
		slog.String("registry", registry), slog.String("digest", d.String()),
		slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
		slog.String("source", rec.source), slog.Duration("duration", time.Since(start)))
}

// errNotPublic refuses content that needed credentials to a peer.
var errNotPublic = ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied, "content fetched with credentials is not served to peers")

func (s *Server) servePeer(q *request) error {
	d := q.route.digest
	if q.r.Method == http.MethodHead {
		c, ok, err := s.lookup(d)
		if err != nil {
			return err
		}
		if !ok {
			// A HEAD starts no fill; the asker learns nothing it could
			// not learn from upstream itself.
			return ocierr.Errorf(http.StatusNotFound, ocierr.CodeBlobUnknown, "blob not on this node")
		}
		defer c.close()
		if !c.info().public {
			return errNotPublic
		}
		c.markSource(q.rec)
		return serveContent(q, c)
	}
	c, err := s.obtain(q, d, nil)
	if err != nil {
		return err
	}
	if !c.info().public {
		defer c.close()
		return errNotPublic
	}
	return s.serve(q, c, nil)
}

// peerError is the answer a peer gets for err. Upstream asking for
// credentials means the content is not public: that is a 403 to a peer,
// not a 401, which would tell the asker that our secrets differ.
func peerError(err error) error {
	var e *ocierr.Error
	if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
		return errNotPublic
	}
	return err
}
