package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/peer"
)

// A peerTransfer is where one fill's bytes come from when peers are on:
// the node that owns the digest (or one it points to), a node that holds
// it, or upstream. It is the blobio.Source of the fill's continuations, so
// after a break the fill continues at the byte it reached from ONE source
// every reader of the broken one agrees on: the next live node in the
// digest's rendezvous order, which fills once from upstream if nobody
// holds the digest. Only that node goes to upstream, not each receiver.
type peerTransfer struct {
	s        *Server
	q        *request
	d        digest.Digest
	fromPeer bool          // the fill serves a peer's ask: never ask an owner
	begun    chan struct{} // closed once the fill reads its first bytes, or gives up
	begunOne sync.Once

	mu      sync.Mutex
	cur     string    // the source of the current body; "" for upstream
	curBody io.Closer // the current peer body, to cut it
	failed  []string  // sources that failed or were cut: not asked again
	used    []string  // every peer that sent bytes, for a mismatch
	onUp    bool      // upstream feeds the fill now; it stays there
}

// peerContinuations bounds how often a fill continues after a break: its
// source dying, then the successor dying, and so on. A transfer that
// breaks more often than this is not going to finish; failing it lets
// the client's retry start afresh.
const peerContinuations = 4

// ownerTries is how many owners a fill asks in turn: the owner, then, if
// it does not answer, its runner-up, which every node that found the
// owner dead asks too and which fills once for all of them. Asking a
// third would only repeat a failure the health marks will soon spare us.
const ownerTries = 2

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// holderProbes is how many nodes a node asks for a digest it should fill
// itself before going to upstream: the holders it knows, then the nodes
// after it in the digest's rendezvous order (the previous owner, when a
// node joined). A miss costs one round trip inside the cluster, and a
// holder probe never waits, so 16 misses cost a few milliseconds before
// a cold fill; a hit saves a whole blob from upstream. 16 asks every
// node of a cluster of up to 17 nodes, so that a node leaving costs no
// upstream fetch for what another node holds (the node that left, the
// previous owner, is gone, and what the others hold is known to nobody).
// In a larger cluster a holder beyond these 16 is found only if known.
const holderProbes = 16

// open finds a peer with d's bytes from offset: the owner (following its
// redirects) unless this node should fill d itself, then the holders.
// It fails if no peer has them; the caller goes to upstream.
func (t *peerTransfer) open(ctx context.Context, offset int64, cont bool) (io.ReadCloser, int64, string, error) {
	p := t.s.peers
	t.mu.Lock()
	skip := slices.Clone(t.failed)
	t.mu.Unlock()
	base := peer.Ask{Registry: t.q.registry, Repo: t.q.route.name, Digest: t.d, Offset: offset,
		From: p.Members.Self(), Continue: cont}
	if len(skip) > 0 {
		base.Failed = skip[len(skip)-1]
	}
	err := errNoPeer
	for range ownerTries * btoi(!t.fromPeer) {
		owner, self := p.Members.OwnerExcept(t.d, skip...)
		if self {
			break
		}
		var body io.ReadCloser
		var size int64
		var from string
		if body, size, from, err = t.follow(ctx, owner, base); err == nil {
			return body, size, from, nil
		}
		skip = append(skip, owner)
		if errors.Is(err, peer.ErrRefused) {
			break // a 4xx describes upstream or the content: the next owner would say the same
		}
	}
	for _, h := range t.holders(skip) {
		a := base
		a.Mode = peer.ModeRelay
		body, size, from, herr := t.follow(ctx, h, a)
		if herr == nil {
			return body, size, from, nil
		}
		err = herr
	}
	return nil, 0, "", err
}

// errNoPeer: no peer was asked.
var errNoPeer = errors.New("no peer to ask")

// holders returns the nodes to ask in ModeRelay: known holders first, then
// the nodes after this one in rendezvous order, without those in skip.
func (t *peerTransfer) holders(skip []string) []string {
	p := t.s.peers
	var out []string
	for _, h := range append(p.fanout.Holders(t.d), p.Members.After(t.d, holderProbes)...) {
		if len(out) == holderProbes {
			break
		}
		if h != p.Members.Self() && !slices.Contains(skip, h) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// follow asks addr, and follows its redirects: each points to a node
// receiving or holding d, asked in ModeRelay, if that node is one of this
// node's peers. A relay that cannot serve
// sends the ask back to where the redirects started, one hop further, so
// at peer.MaxHops that node serves it itself.
func (t *peerTransfer) follow(ctx context.Context, addr string, a peer.Ask) (io.ReadCloser, int64, string, error) {
	origin, originMode, at := addr, a.Mode, addr
	for {
		body, size, err := t.s.peers.Client.Get(ctx, at, a)
		if err == nil {
			t.use(at, body)
			return body, size, at, nil
		}
		var redirect *peer.RedirectError
		switch {
		case a.Hop >= peer.MaxHops || ctx.Err() != nil:
			return nil, 0, "", err
		case errors.As(err, &redirect) && t.pointable(redirect.To):
			at, a.Mode = redirect.To, peer.ModeRelay
		case errors.As(err, &redirect):
			// Not one of our peers, or one we know lies or fails: back
			// to the origin, which picks another.
			a.Failed, at, a.Mode = redirect.To, origin, originMode
		case at != origin:
			// The relay had nothing for us or failed: back to the
			// node that pointed to it, which picks another.
			a.Failed, at, a.Mode = at, origin, originMode
		default:
			return nil, 0, "", err
		}
		a.Hop++
	}
}

// pointable reports whether a redirect to addr may be followed: only to
// one of this node's peers, and not to one marked bad. The answer that
// names addr is not signed, and following it sends a signed request there.
func (t *peerTransfer) pointable(addr string) bool {
	p := t.s.peers
	return p.Members.IsPeer(addr) && !p.Client.IsBad(addr)
}

// use makes from the current source, whose body can be cut.
func (t *peerTransfer) use(from string, body io.Closer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur, t.curBody = from, body
	if !slices.Contains(t.used, from) {
		t.used = append(t.used, from)
	}
}

// Name implements blobio.Source.
func (t *peerTransfer) Name() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == "" {
		return "upstream " + t.q.registry
	}
	return "peer " + t.cur
}

// Open implements blobio.Source: the continuation after a break, from the
// peers that are left, else upstream. It runs on the fill's context, which
// ends only when the fill makes no progress for the fill timeout (or is
// stopped): a continuation never inherits a deadline spent by the
// transfer before it.
func (t *peerTransfer) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	t.mu.Lock()
	if t.cur != "" && !slices.Contains(t.failed, t.cur) {
		t.failed = append(t.failed, t.cur)
	}
	t.cur, t.curBody = "", nil
	onUp := t.onUp
	t.mu.Unlock()
	if !onUp {
		body, _, from, err := t.open(ctx, offset, true)
		if err == nil {
			t.s.log.LogAttrs(ctx, slog.LevelInfo, "peer transfer continues",
				slog.String("digest", t.d.String()), slog.String("peer", from), slog.Int64("offset", offset))
			return body, nil
		}
	}
	t.mu.Lock()
	t.onUp = true
	t.mu.Unlock()
	return (&upstreamRest{s: t.s, q: t.q, d: t.d}).Open(ctx, offset)
}

// fedByUpstream reports whether upstream feeds the fill now: such a fill
// waits on no peer, so any peer may continue from it without a cycle.
func (t *peerTransfer) fedByUpstream() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.onUp
}

// cut ends the current peer body, so the fill continues from its next
// source, skipping also failed. A node asked to continue a transfer
// whose source failed does that when its own fill comes from a peer:
// that peer may be waiting on the asker, and the asker on it.
func (t *peerTransfer) cut(failed string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.curBody == nil {
		return
	}
	if failed != "" && !slices.Contains(t.failed, failed) {
		t.failed = append(t.failed, failed)
	}
	t.failed = append(t.failed, t.cur)
	t.curBody.Close()
	t.curBody = nil
}

// peersUsed returns every peer that sent bytes of this transfer.
func (t *peerTransfer) peersUsed() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.used)
}

// markBegun says the fill exists (or never will).
func (t *peerTransfer) markBegun() { t.begunOne.Do(func() { close(t.begun) }) }

// transferBody is a fill's body from a peerTransfer; closing it ends the
// transfer's registration. Its first Read marks the transfer begun: the
// fill reads only after the store began it.
type transferBody struct {
	io.ReadCloser
	t    *peerTransfer
	done func()
}

func (b *transferBody) Read(p []byte) (int, error) {
	b.t.markBegun()
	return b.ReadCloser.Read(p)
}

func (b *transferBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}
