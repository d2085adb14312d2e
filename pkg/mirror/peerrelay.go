package mirror

import (
	"errors"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/peer"
)

// serveRelay serves a peer.ModeRelay ask: from the store, or from this
// node's fill in progress, never by fetching. A continuation (the asker's
// source failed mid-transfer) is served from a fill in progress only if
// upstream feeds it: a fill fed by a peer might be waiting, through a
// chain of relays, on the asker itself.
func (s *Server) serveRelay(q *request, a peer.Ask) error {
	d := q.route.digest
	c, ok, err := s.lookup(d)
	if err == nil && !ok && a.Hop > 0 && s.awaitFill(q, d) {
		c, ok, err = s.lookup(d)
	}
	if err != nil {
		return err
	}
	if !ok {
		return errNotHeld
	}
	if _, filling := c.(*fillingContent); filling && a.Continue {
		if t := s.transfer(d); t != nil && !t.fedByUpstream() {
			c.close()
			return errNotHeld
		}
	}
	return s.servePeerAdmitted(q, c, a, func(c content) error {
		// Not s.serve: a fill that lost its disk would fetch an uncached
		// copy, and a relay never fetches.
		err := s.serveAuthorized(q, c)
		if errors.Is(err, diskstore.ErrSpilled) {
			return errNotHeld
		}
		return err
	})
}

// relayWait bounds how long a redirected relay ask waits for this node's
// fill of the digest to begin, when this node is opening it (its owner
// already streams to it and so points others here). A holder probe (hop
// 0) never waits: it comes from a node about to fill the digest itself,
// perhaps the very node this one is waiting on. It is half the asker's
// header timeout (peer.DefaultResponseHeaderTimeout), so an asker whose
// relay has nothing yet still hears in time to ask elsewhere.
const relayWait = peer.DefaultResponseHeaderTimeout / 2

// awaitFill waits, at most relayWait, for the fill of d that this node is
// opening through peers to begin. It reports whether there was one.
func (s *Server) awaitFill(q *request, d digest.Digest) bool {
	t := s.transfer(d)
	if t == nil {
		return false
	}
	timer := time.NewTimer(relayWait)
	defer timer.Stop()
	select {
	case <-t.begun:
		return true
	case <-timer.C:
	case <-q.r.Context().Done():
	}
	return false
}

// admit applies the fan-out bound to an ask for d: release ends the
// stream it admits, or to names the node to point the asker to. Only an
// asker in this node's peer set is remembered, and so ever pointed to.
func (s *Server) admit(d digest.Digest, a peer.Ask) (release func(bool), to string) {
	if s.peers == nil {
		return func(bool) {}, ""
	}
	if a.From != "" && !s.peers.Members.IsPeer(a.From) {
		a.From = ""
	}
	return s.peers.fanout.Admit(d, a)
}

// redirectPeer points the asker to node to.
func redirectPeer(q *request, to string) error {
	q.rec.source = "redirect"
	peer.Redirect(q.rec, to)
	return nil
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
