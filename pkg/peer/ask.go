package peer

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// Mode says what a node may do to answer a peer request.
type Mode string

const (
	// ModeOwner asks the node that owns a digest (or, after a failure,
	// the next live one in rendezvous order). It serves from its store,
	// from its fill in progress, or fills from upstream once for every
	// asker; past its fan-out it answers with a redirect.
	ModeOwner Mode = ""
	// ModeRelay asks a node that holds the digest, or is receiving it,
	// to serve it from its store or its own fill in progress. It never
	// starts a fill and never asks anyone, so a relay request cannot
	// loop or reach upstream; a node that has nothing answers 404.
	ModeRelay Mode = "relay"
)

// HeaderSource names, in a redirect (307), the node to ask instead: one
// that holds the digest or is receiving it now.
const HeaderSource = "Nodecache-Peer-Source"

// MaxHops bounds how many redirects one transfer follows. The tree of
// receivers is log_F(K) deep (5 for a thousand nodes at the default
// fan-out), so 8 is room; at MaxHops a node serves whatever its fan-out,
// so every ask ends at a node that sends bytes.
const MaxHops = 8

// Ask is one request for a blob to a peer. Every field but the offset is
// in the signed query, so a captured request cannot be replayed with
// another meaning; the offset travels in Range, which is not signed, and
// only chooses which bytes of the same blob come back.
type Ask struct {
	Registry string
	Repo     string
	Digest   digest.Digest
	Offset   int64 // first byte wanted
	Mode     Mode
	// From is the asking node's advertised address: the node the answer
	// feeds, and so a node that may serve the digest to others soon.
	From string
	// Hop counts the redirects followed so far.
	Hop int
	// Failed names a source that failed this transfer: the node asked
	// continues in its place, and does not point back to it.
	Failed string
	// Continue marks the continuation of a transfer under way. A relay
	// then serves from a fill in progress only if that fill cannot be
	// waiting on the asker: only if upstream feeds it.
	Continue bool
}

// query is the signed query of a.
func (a Ask) query() url.Values {
	v := url.Values{"ns": {a.Registry}, "repo": {a.Repo}}
	if a.Mode != ModeOwner {
		v.Set("mode", string(a.Mode))
	}
	if a.From != "" {
		v.Set("from", a.From)
	}
	if a.Hop > 0 {
		v.Set("hop", strconv.Itoa(a.Hop))
	}
	if a.Failed != "" {
		v.Set("failed", a.Failed)
	}
	if a.Continue {
		v.Set("cont", "1")
	}
	return v
}

// errBadAsk is wrapped by ParseAsk's errors.
var errBadAsk = errors.New("invalid peer request")

// ParseAsk reads the Ask of a peer request for d. The handler has checked
// ns, repo and d; ParseAsk checks the rest and takes the offset from
// Range (only "bytes=N-" is parsed; other ranges are the Fetcher's).
func ParseAsk(r *http.Request, registry, repo string, d digest.Digest) (Ask, error) {
	q := r.URL.Query()
	a := Ask{Registry: registry, Repo: repo, Digest: d, Mode: Mode(q.Get("mode")), Continue: q.Get("cont") == "1"}
	if a.Mode != ModeOwner && a.Mode != ModeRelay {
		return Ask{}, fmt.Errorf("%w: mode %q", errBadAsk, a.Mode)
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"from", &a.From}, {"failed", &a.Failed}} {
		if s := q.Get(f.key); s != "" {
			n, err := NormalizeAddr(s)
			if err != nil {
				return Ask{}, fmt.Errorf("%w: %s: %v", errBadAsk, f.key, err)
			}
			*f.dst = n
		}
	}
	if s := q.Get("hop"); s != "" {
		h, err := strconv.Atoi(s)
		if err != nil || h < 0 || h > MaxHops {
			return Ask{}, fmt.Errorf("%w: hop %q", errBadAsk, s)
		}
		a.Hop = h
	}
	if rng := r.Header.Get("Range"); rng != "" {
		var off int64
		if _, err := fmt.Sscanf(rng, "bytes=%d-", &off); err == nil && off > 0 {
			a.Offset = off
		}
	}
	return a, nil
}

// Redirect answers a peer request with a pointer to another node, which
// the asking node then asks in ModeRelay.
func Redirect(w http.ResponseWriter, to string) {
	w.Header().Set(HeaderSource, to)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// RedirectError is returned by Client.Get when the node asked points to
// another.
type RedirectError struct {
	From, To string
}

func (e *RedirectError) Error() string { return e.From + " points to " + e.To }
