package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/peer"
)

// Peers is what the mirror needs to fetch blobs from other nodes: who owns
// a digest, a client to fetch it with, and the bound on how many peers
// this node streams one blob to at once.
type Peers struct {
	Members *peer.Membership
	Client  *peer.Client
	// Fanout bounds this node's streams per blob (--peer-fanout); nil
	// means peer.NewFanout(peer.DefaultFanout).
	Fanout *peer.Fanout

	fanout *peer.Fanout
	tr     *transfers
}

// transfers are the fills this node feeds through peers now, by digest.
type transfers struct {
	mu sync.Mutex
	m  map[digest.Digest]*peerTransfer
}

// WithPeers fills blobs from the peer node that owns them before going to
// upstream. Without it, or with a zero Peers, every fill goes to upstream.
func WithPeers(p Peers) Option {
	return func(s *Server) {
		if p.Members == nil || p.Client == nil {
			return
		}
		s.peers = &Peers{Members: p.Members, Client: p.Client, Fanout: p.Fanout, fanout: p.Fanout,
			tr: &transfers{m: make(map[digest.Digest]*peerTransfer)}}
		if s.peers.fanout == nil {
			s.peers.fanout = peer.NewFanout(peer.DefaultFanout)
		}
	}
}

// Allowed reports whether registry is on the allow-list: the peer handler
// refuses the others, so no peer can make this node contact a registry it
// would not contact for its own clients.
func (s *Server) Allowed(registry string) bool { return s.allowed[strings.ToLower(registry)] }

// peerSource asks the peers for d: the node that owns it, or the one it
// points to, or, when this node should fill d itself, a node that holds
// it. ok is false when there are no peers or none can serve d; the fill
// then goes to upstream.
//
// Peers are asked only for blobs a client asked for without credentials:
// a peer serves only public content, and content behind credentials must
// come from upstream, which checks them. A fill for a peer's ask never
// asks an owner, only holders, which serve from what they have and never
// ask anyone: requests cannot loop.
func (s *Server) peerSource(ctx context.Context, q *request, d digest.Digest) (src fillSource, ok bool) {
	if s.peers == nil || q.route.kind != ociref.KindBlobs || !q.auth.IsZero() {
		return fillSource{}, false
	}
	t := &peerTransfer{s: s, q: q, d: d, fromPeer: peer.IsPeerRequest(q.r), begun: make(chan struct{})}
	// Registered while it opens, so that a relay ask for d arriving
	// meanwhile (the owner already counts this node as receiving d) waits
	// for the fill instead of finding nothing.
	tr := s.peers.tr
	tr.mu.Lock()
	tr.m[d] = t
	tr.mu.Unlock()
	done := func() {
		t.markBegun()
		tr.mu.Lock()
		if tr.m[d] == t {
			delete(tr.m, d)
		}
		tr.mu.Unlock()
	}
	body, size, from, err := t.open(ctx, 0, false)
	if err != nil {
		done()
		if !errors.Is(err, errNoPeer) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "peer fetch failed; filling from upstream",
				slog.String("digest", d.String()), slog.Any("error", err))
		}
		return fillSource{}, false
	}
	rb := blobio.NewResumer(ctx, blobio.Transfer{
		Body: body, From: "peer " + from, Size: size, Sources: []blobio.Source{t},
		Budget: peerContinuations,
		OnBreak: func(from string, offset int64, err error) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "peer transfer broke; continuing",
				slog.String("source", from), slog.String("digest", d.String()), slog.Int64("offset", offset), slog.Any("error", err))
		},
	})
	return fillSource{body: &transferBody{ReadCloser: rb, t: t, done: done}, size: size, public: true, peer: from}, true
}

// transfer returns the peer transfer feeding this node's fill of d, if any.
func (s *Server) transfer(d digest.Digest) *peerTransfer {
	if s.peers == nil {
		return nil
	}
	s.peers.tr.mu.Lock()
	defer s.peers.tr.mu.Unlock()
	return s.peers.tr.m[d]
}

// peerCorrupt notes that the peers that sent d sent bytes not matching it:
// every one of them is marked bad, since which one lied is not known.
func (s *Server) peerCorrupt(from string, d digest.Digest) {
	if s.peers == nil {
		return
	}
	peers := []string{from}
	if t := s.transfer(d); t != nil {
		peers = t.peersUsed()
	}
	for _, p := range peers {
		s.peers.Client.ReportCorrupt(p, d)
		s.peers.fanout.Forget(p)
	}
}

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
// to a peer, honouring Range. An ask in peer.ModeOwner is served from the
// store or by filling d like a local client's request would (joining a
// fill of d in progress); one in peer.ModeRelay only from the store or a
// fill in progress. Past the fan-out bound the peer is pointed to a node
// receiving or holding d. Only public content is served: a peer request
// carries no client credentials that upstream could check.
func (s *Server) ServePeer(w http.ResponseWriter, r *http.Request, registry, repo string, d digest.Digest) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, source: "none"}
	q := &request{
		rec: rec, r: r, registry: registry,
		route: route{kind: ociref.KindBlobs, name: repo, digest: d},
	}
	a, err := peer.ParseAsk(r, registry, repo, d)
	if err == nil {
		err = s.servePeer(q, a)
	} else {
		err = ocierr.Errorf(http.StatusBadRequest, ocierr.CodeUnsupported, "%v", err)
	}
	if err != nil {
		writeError(rec, r, peerError(err))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "peer request",
		slog.String("method", r.Method), slog.String("peer", r.RemoteAddr), slog.String("mode", string(a.Mode)),
		slog.String("registry", registry), slog.String("digest", d.String()),
		slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
		slog.String("source", rec.source), slog.Duration("duration", time.Since(start)))
}

// errNotPublic refuses content that needed credentials to a peer.
var errNotPublic = ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied, "content fetched with credentials is not served to peers")

// errNotHeld answers a relay ask for content this node cannot serve
// without fetching it.
var errNotHeld = ocierr.Errorf(http.StatusNotFound, ocierr.CodeBlobUnknown, "blob not on this node")

func (s *Server) servePeer(q *request, a peer.Ask) error {
	d := q.route.digest
	if q.r.Method == http.MethodHead {
		c, ok, err := s.lookup(d)
		if err != nil {
			return err
		}
		if !ok {
			// A HEAD starts no fill; the asker learns nothing it could
			// not learn from upstream itself.
			return errNotHeld
		}
		defer c.close()
		if !c.info().public {
			return errNotPublic
		}
		c.markSource(q.rec)
		return serveContent(q, c)
	}
	if a.Mode == peer.ModeRelay {
		return s.serveRelay(q, a)
	}
	if t := s.transfer(d); t != nil && a.Continue && !t.fedByUpstream() {
		t.cut(a.Failed)
	}
	// The fill first, then the fan-out: a node pointed to is one this
	// node already streams to, so it has headers and is about to fill.
	c, err := s.obtain(q, d, nil)
	if err != nil {
		return err
	}
	return s.servePeerAdmitted(q, c, a, func(c content) error { return s.serve(q, c, nil) })
}

// servePeerAdmitted serves c to a peer's ask a with serve, which closes c: only
// public content, and only within the fan-out bound; past it, the asker
// is pointed to another node (s.admit) and c is closed unserved. The
// stream counts as sent for the fan-out's holders if serve succeeds.
func (s *Server) servePeerAdmitted(q *request, c content, a peer.Ask, serve func(content) error) error {
	if !c.info().public {
		c.close()
		return errNotPublic
	}
	release, to := s.admit(q.route.digest, a)
	if to != "" {
		c.close()
		return redirectPeer(q, to)
	}
	sent := false
	defer func() { release(sent) }()
	err := serve(c)
	sent = err == nil
	return err
}
