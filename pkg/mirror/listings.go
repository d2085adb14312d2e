package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/upstream"
)

const (
	// DefaultListingTTL is how long a tags/list or referrers answer is
	// served without asking upstream: both change on every push, so the
	// window is short, yet a burst of clients listing the same repository
	// (a CI fan-out, `oras copy -r` walking referrers) asks upstream once.
	// While upstream cannot answer, the answer is kept as a tag's is.
	DefaultListingTTL = 10 * time.Second

	// maxListingSize bounds one kept answer. A tags/list of 10,000 tags
	// or a referrers index of a few thousand descriptors is about 1 MiB;
	// a larger answer is relayed, not kept.
	maxListingSize = 1 << 20

	// maxListingBytes bounds all kept answers together, and maxListings
	// their number (as maxTagRecords bounds tags): 32 MiB holds the
	// listings of hundreds of repositories; the least recently used go
	// first.
	maxListingBytes = 32 << 20
	maxListings     = maxTagRecords

	// listingTimeout bounds one upstream listing, asked on a context of
	// its own for all the clients waiting on it, as tagResolveTimeout.
	listingTimeout = tagResolveTimeout
)

// listingHeaders are the headers of a listing kept and served again:
// Link carries upstream's pagination as upstream wrote it.
var listingHeaders = []string{"Content-Type", "Link", "OCI-Filters-Applied"}

// errListingTooLarge: the answer is larger than maxListingSize and is
// relayed uncached.
var errListingTooLarge = errors.New("listing too large to keep")

// listing is an upstream answer to tags/list or referrers: a 200 with its
// body, or a 404.
type listing struct {
	status int
	header http.Header
	body   []byte
	auth   upstream.AuthSource
	at     time.Time
}

// listings are the kept answers, in memory, bounded in number and bytes.
// They are kept per query (registry, repository, route, reference, the
// n, last and artifactType parameters, the accepted types), so a page is
// served exactly as upstream paginated and filtered it.
type listings struct {
	fresh, notFound, keep time.Duration
	now                   func() time.Time

	// mu guards lru and bytes.
	mu    sync.Mutex
	lru   *simplelru.LRU[string, *listing]
	bytes int64
}

func newListings(fresh, notFound, keep time.Duration, now func() time.Time) *listings {
	l := &listings{fresh: fresh, notFound: notFound, keep: keep, now: now}
	lru, err := simplelru.NewLRU[string, *listing](maxListings, func(k string, v *listing) { l.bytes -= v.size(k) })
	if err != nil {
		panic(err) // unreachable: the size is positive
	}
	l.lru = lru
	return l
}

// get returns the answer kept under k, whether it is fresh, and whether
// there is one young enough to serve when upstream cannot answer.
func (l *listings) get(k string) (v *listing, fresh, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok = l.lru.Get(k)
	if !ok {
		return nil, false, false
	}
	age := l.now().Sub(v.at)
	if l.keep > 0 && age > l.keep {
		l.lru.Remove(k)
		return nil, false, false
	}
	if v.status == http.StatusNotFound {
		return v, age < l.notFound, true
	}
	return v, age < l.fresh, true
}

// set keeps v under k, in place of the answer kept there before (which
// Add replaces without calling the eviction callback, so its bytes are
// taken off here), then evicts the least recently used down to
// maxListingBytes.
func (l *listings) set(k string, v *listing) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.lru.Peek(k); ok {
		l.bytes -= old.size(k)
	}
	l.lru.Add(k, v)
	l.bytes += v.size(k)
	for l.bytes > maxListingBytes && l.lru.Len() > 0 {
		l.lru.RemoveOldest()
	}
}

// size is what v kept under k counts against maxListingBytes: the body,
// the kept headers and the key, which holds the client's last= and
// artifactType= values.
func (v *listing) size(k string) int64 {
	n := len(k) + len(v.body)
	for name, vs := range v.header {
		n += len(name)
		for _, s := range vs {
			n += len(s)
		}
	}
	return int64(n)
}

// passThrough answers tags/list and referrers from the kept answer while
// it is fresh, else from upstream, one request for all the clients asking
// at once; when upstream cannot answer, from the last answer, stale.
// Only the query parameters the spec defines are forwarded. An answer
// given for the client's credentials is kept under their identity.
func (s *Server) passThrough(q *request) error {
	req := s.listingRequest(q)
	shared := q.registry + "/" + q.route.name + "|" + string(q.route.kind) + "|" + req.Ref + "?" + req.RawQuery +
		"|" + req.Header.Get("Accept")
	keys := []string{shared}
	if q.identity != "" {
		keys = []string{shared + "|" + q.identity, shared}
	}
	for _, k := range keys {
		if v, fresh, ok := s.listings.get(k); ok && fresh && applies(q, k, shared, v) {
			q.rec.result = resultHit
			return s.serveListing(q, v, false)
		}
	}
	got, err, _ := s.listingsSF.Do(keys[0], func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(q.r.Context()), listingTimeout)
		defer cancel()
		return s.askListing(ctx, q, req, shared, keys[0])
	})
	switch {
	case err == nil:
		return s.serveListing(q, got.(*listing), false)
	case errors.Is(err, errListingTooLarge):
		req.Method = q.r.Method
		return s.relay(q, req, "", listingHeaders...)
	case !isTransient(err):
		return err
	}
	for _, k := range keys {
		if v, _, ok := s.listings.get(k); ok && applies(q, k, shared, v) {
			if !errors.Is(err, upstream.ErrCircuitOpen) {
				s.log.LogAttrs(q.r.Context(), slog.LevelWarn, "serving stale listing",
					slog.String("registry", q.registry), slog.String("repository", q.route.name),
					slog.String("route", string(q.route.kind)), slog.Any("error", err))
			}
			q.rec.result = resultHit
			return s.serveListing(q, v, true)
		}
	}
	return err
}

// applies reports whether the listing v kept under k may answer q: a 404
// answered without credentials says nothing to a client that has some (a
// registry may hide a private repository from anonymous requests).
func applies(q *request, k, shared string, v *listing) bool {
	return !(k == shared && q.identity != "" && v.status == http.StatusNotFound)
}

// listingRequest is the upstream request for a listing: GET (a HEAD is
// answered from the GET's answer), the spec's query parameters.
func (s *Server) listingRequest(q *request) upstream.Request {
	ref := ""
	if q.route.kind == ociref.KindReferrers {
		ref = q.route.digest.String()
	}
	req := q.upstreamRequest(http.MethodGet, ref, acceptHeader(parseAccept(q.r.Header)))
	if req.Header == nil {
		req.Header = http.Header{}
	}
	forward := url.Values{}
	for _, k := range []string{"n", "last", "artifactType"} {
		if v := q.r.URL.Query().Get(k); v != "" {
			forward.Set(k, v)
		}
	}
	req.RawQuery = forward.Encode()
	return req
}

// askListing asks upstream and keeps a 200 or 404 answer: under private
// if it took the client's credentials, else under shared.
func (s *Server) askListing(ctx context.Context, q *request, req upstream.Request, shared, private string) (*listing, error) {
	resp, err := s.ask(ctx, q, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return nil, upstreamError(q.registry, q.route.kind, resp.StatusCode, resp.Header)
	}
	v := &listing{status: resp.StatusCode, header: http.Header{}, auth: resp.Auth, at: s.now()}
	if resp.StatusCode == http.StatusOK {
		if resp.ContentLength > maxListingSize {
			return nil, errListingTooLarge
		}
		v.body, err = io.ReadAll(io.LimitReader(resp.Body, maxListingSize+1))
		if err != nil {
			return nil, ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "reading %s from %s: %v", q.route.kind, q.registry, err)
		}
		if len(v.body) > maxListingSize {
			return nil, errListingTooLarge
		}
		copyHeaders(v.header, resp.Header, listingHeaders...)
	}
	key := shared
	if resp.Auth == upstream.AuthRequest {
		key = private
	}
	s.listings.set(key, v)
	return v, nil
}

// serveListing writes a kept answer; a stale one carries a Warning.
func (s *Server) serveListing(q *request, v *listing, stale bool) error {
	if v.status == http.StatusNotFound {
		return upstreamError(q.registry, q.route.kind, http.StatusNotFound, nil)
	}
	q.rec.source = "upstream"
	if q.rec.result == resultHit {
		q.rec.source = "cache"
	}
	h := q.rec.Header()
	for k, vs := range v.header {
		h[k] = vs
	}
	if link := h.Get("Link"); link != "" {
		h.Set("Link", q.sameRegistry(link)) // per request: the form it named the registry in
	}
	h.Set("Content-Length", strconv.Itoa(len(v.body)))
	if stale {
		h.Set("Warning", staleWarning)
	}
	q.rec.WriteHeader(http.StatusOK)
	if q.r.Method == http.MethodHead {
		return nil
	}
	if _, err := q.rec.Write(v.body); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}
