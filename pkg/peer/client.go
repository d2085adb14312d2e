package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"nodecache/internal/blobio"
)

const (
	// DefaultDialTimeout bounds the connect to a peer. Peers share a
	// cluster network where a connect takes well under a millisecond; one
	// that has not answered in 300 ms is gone, and giving up then keeps a
	// dead owner's cost to a fraction of a typical layer's download.
	DefaultDialTimeout = 300 * time.Millisecond

	// DefaultResponseHeaderTimeout bounds the wait for a peer's response
	// headers. An owner sends them as soon as its own fill from upstream
	// starts (it streams while filling), so 2 s covers its upstream's
	// time to first byte; a slower owner is no better than going to
	// upstream ourselves.
	DefaultResponseHeaderTimeout = 2 * time.Second

	// DefaultStallTimeout ends a peer response whose body sends nothing for
	// 30 s. Without it a peer that stops mid-body would hold the fill until
	// the fill's own timeout (an hour); 30 s outlasts the pauses of a
	// healthy upstream behind the owner.
	DefaultStallTimeout = 30 * time.Second

	// maxIdleConnsPerPeer keeps connections warm while containerd pulls
	// several layers of an image in parallel (3 by default) and other
	// clients pull other images whose layers the same peer owns.
	maxIdleConnsPerPeer = 16

	// idleConnTimeout drops idle peer connections after 90 s, as
	// net/http's DefaultTransport does.
	idleConnTimeout = 90 * time.Second

	// blobsPath is the peer API route; see Handler.
	blobsPath = "/peer/v1/blobs/"
)

// Fetch results, the values of the result label of
// nodecache_peer_fetches_total.
const (
	ResultOK      = "ok"      // the whole body arrived, or the caller closed it early
	ResultError   = "error"   // no answer, a 5xx, or a body that broke or stalled
	ResultCorrupt = "corrupt" // the caller found the content did not match its digest
	ResultRefused = "refused" // the peer answered with a 4xx
)

var (
	// ErrUnavailable is wrapped by Fetch errors where the peer gave no
	// usable answer: no connection, no headers in time, or a 5xx.
	ErrUnavailable = errors.New("peer unavailable")
	// ErrRefused is wrapped by Fetch errors where the peer answered with
	// a 4xx, e.g. the digest is unknown upstream or our signature was
	// refused.
	ErrRefused = errors.New("peer refused")
)

// Client fetches blobs from the peers that own them. It is safe for
// concurrent use.
//
// Client is a prometheus.Collector of nodecache_peer_fetches_total.
type Client struct {
	http    *http.Client
	secret  *Secret
	health  *Health
	stall   time.Duration
	fetches *prometheus.CounterVec
}

// NewClient returns a client that signs its requests with secret and marks
// peers that fail in health.
func NewClient(secret *Secret, health *Health) *Client {
	return newClient(secret, health, DefaultDialTimeout, DefaultResponseHeaderTimeout, DefaultStallTimeout)
}

func newClient(secret *Secret, health *Health, dial, header, stall time.Duration) *Client {
	t := &http.Transport{
		Proxy:                 nil, // peer traffic stays inside the cluster whatever HTTP_PROXY says
		DialContext:           (&net.Dialer{Timeout: dial}).DialContext,
		ResponseHeaderTimeout: header,
		MaxIdleConnsPerHost:   maxIdleConnsPerPeer,
		IdleConnTimeout:       idleConnTimeout,
		// Blobs are compressed already, and a transparently gunzipped
		// body would not match Content-Length or Range.
		DisableCompression: true,
	}
	c := &Client{
		http:   &http.Client{Transport: t, CheckRedirect: noRedirects},
		secret: secret,
		health: health,
		stall:  stall,
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_peer_fetches_total",
			Help: "Blob fetches from peers, by result (ok, error, corrupt, refused).",
		}, []string{"result"}),
	}
	for _, r := range []string{ResultOK, ResultError, ResultCorrupt, ResultRefused} {
		c.fetches.WithLabelValues(r) // export zeros, so rates work from the start
	}
	return c
}

// noRedirects keeps the client on the node asked: a peer points elsewhere
// only with a 307 and HeaderSource, which Get returns to its caller to
// check, and following a Location would send a signed request anywhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Fetch asks owner for blob d of repo in registry, starting at byte
// offset (0 for all of it). It returns the body, which yields the bytes
// from offset to the end, and the blob's full size (-1 if the owner does
// not know it yet). The caller must close the body, and must verify the
// content against d: a fill does that anyway, and the caller reports a
// mismatch with ReportCorrupt.
//
// A failure of the owner itself (no connection within DefaultDialTimeout,
// no headers within DefaultResponseHeaderTimeout, a broken or stalled
// body, a refused signature) marks it bad in Health. Errors wrap
// ErrUnavailable or ErrRefused; either way the caller should go to
// upstream. Cancelling ctx is never held against the peer.
func (c *Client) Fetch(ctx context.Context, owner, registry, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	return c.Get(ctx, owner, Ask{Registry: registry, Repo: repo, Digest: d, Offset: offset})
}

// Get asks node addr for a.Digest as a says. It is Fetch with the whole
// Ask; a redirect comes back as a *RedirectError naming the node to ask
// next, normalised, and neither marks nor counts anybody (the fetch is
// not over). Get never follows it: the caller must check that the target
// is one of its peers (Membership.IsPeer) before asking it.
func (c *Client) Get(ctx context.Context, addr string, a Ask) (io.ReadCloser, int64, error) {
	u := url.URL{
		Scheme:   "http",
		Host:     addr,
		Path:     blobsPath + string(a.Digest),
		RawQuery: a.query().Encode(),
	}
	// The request's own context lets the stall timer end the body without
	// cancelling the caller's ctx.
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if a.Offset > 0 {
		req.Header.Set("Range", blobio.RangeFrom(a.Offset))
	}
	c.secret.Sign(req)
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		if a.Mode == ModeRelay && isTimeout(err) {
			// A relay may wait for its own fill to begin before it
			// answers; slow is not broken. The asker goes elsewhere.
			c.fetches.WithLabelValues(ResultError).Inc()
		} else {
			c.failed(ctx, addr, err.Error())
		}
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, addr, err)
	}
	if resp.StatusCode == http.StatusTemporaryRedirect {
		resp.Body.Close()
		cancel()
		// The answer is not signed: the target is checked like any peer
		// address, and the caller follows it only to one of its peers.
		to, err := NormalizeAddr(resp.Header.Get(HeaderSource))
		if err != nil {
			c.fetches.WithLabelValues(ResultError).Inc()
			return nil, 0, fmt.Errorf("%w: %s: redirect: %v", ErrUnavailable, addr, err)
		}
		return nil, 0, &RedirectError{From: addr, To: to}
	}
	size, skip, err := c.checkResponse(addr, resp, a.Offset)
	if err != nil {
		resp.Body.Close()
		cancel()
		return nil, 0, err
	}
	b := &body{c: c, ctx: ctx, owner: addr, rc: blobio.NewStallReader(resp.Body, c.stall, cancel, nil), cancel: cancel}
	if skip > 0 {
		// The owner ignored our Range (it streams some content uncached,
		// start to end); drop what we already have.
		if _, err := io.CopyN(io.Discard, b, skip); err != nil {
			b.Close()
			return nil, 0, fmt.Errorf("%w: %s: skipping to offset %d: %v", ErrUnavailable, addr, a.Offset, err)
		}
	}
	return b, size, nil
}

// isTimeout reports whether err is a timeout (no headers in time) rather
// than a refused or broken connection.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// checkResponse turns an unusable answer into an error, counting and
// marking as it goes. For a usable one it returns the blob's size and how
// many leading bytes of the body to skip to reach offset.
func (c *Client) checkResponse(owner string, resp *http.Response, offset int64) (size, skip int64, err error) {
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp.ContentLength, offset, nil
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		cr, err := blobio.ParseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && cr.Start == offset {
			return cr.Total, 0, nil
		}
		c.failed(context.Background(), owner, "bad Content-Range")
		return 0, 0, fmt.Errorf("%w: %s: Content-Range %q does not start at %d", ErrUnavailable, owner, resp.Header.Get("Content-Range"), offset)
	case resp.StatusCode == http.StatusUnauthorized:
		// Our secrets differ: every request would fail the same way.
		c.health.MarkBad(owner, "refused our signature")
		c.fetches.WithLabelValues(ResultRefused).Inc()
		return 0, 0, fmt.Errorf("%w: %s answered %s", ErrRefused, owner, resp.Status)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		// The owner's view of upstream (unknown blob, registry not
		// allowed there): not the peer's failure, and upstream will say
		// the same to us or better.
		c.fetches.WithLabelValues(ResultRefused).Inc()
		return 0, 0, fmt.Errorf("%w: %s answered %s", ErrRefused, owner, resp.Status)
	default:
		// 5xx is mostly the owner's upstream failing; we may have better
		// luck with it, so the peer is not marked.
		c.fetches.WithLabelValues(ResultError).Inc()
		return 0, 0, fmt.Errorf("%w: %s answered %s", ErrUnavailable, owner, resp.Status)
	}
}

// failed counts an error and marks owner bad, unless the caller gave up
// (that still counts as an error: the fetch did not complete).
func (c *Client) failed(ctx context.Context, owner, reason string) {
	c.fetches.WithLabelValues(ResultError).Inc()
	if ctx.Err() == nil {
		c.health.MarkBad(owner, reason)
	}
}

// IsBad reports whether addr is marked bad: a node to point nobody to.
func (c *Client) IsBad(addr string) bool { return c.health.IsBad(addr) }

// ReportCorrupt records that content fetched from owner did not match its
// digest or size, and marks owner bad: a peer that serves wrong bytes once
// is not asked again for DefaultBadFor.
func (c *Client) ReportCorrupt(owner string, d digest.Digest) {
	c.fetches.WithLabelValues(ResultCorrupt).Inc()
	c.health.MarkBad(owner, "served content not matching "+string(d))
}

// Describe implements prometheus.Collector.
func (c *Client) Describe(ch chan<- *prometheus.Desc) { c.fetches.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *Client) Collect(ch chan<- prometheus.Metric) { c.fetches.Collect(ch) }

// body is a peer response body. It counts the fetch's result once, when the
// body ends, and ends a body that stalls (blobio.StallReader, which
// cancels the request when the peer sends nothing for c.stall).
type body struct {
	c      *Client
	ctx    context.Context // the caller's
	owner  string
	rc     *blobio.StallReader
	cancel context.CancelFunc
	done   atomic.Bool // result counted
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(ResultOK, "")
	case errors.Is(err, blobio.ErrStalled):
		err = fmt.Errorf("%w: %s sent nothing for %s", ErrUnavailable, b.owner, b.c.stall)
		b.finish(ResultError, "body stalled")
	case err != nil:
		err = fmt.Errorf("%w: %s: %w", ErrUnavailable, b.owner, err)
		b.finish(ResultError, "body broke: "+err.Error())
	}
	return n, err
}

// Close ends the body. One closed before its end counts as ok: the caller
// stopped reading, the peer did nothing wrong.
func (b *body) Close() error {
	b.finish(ResultOK, "")
	err := b.rc.Close() // stops the stall timer too
	b.cancel()
	return err
}

func (b *body) finish(result, reason string) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	if result == ResultError {
		b.c.failed(b.ctx, b.owner, reason)
		return
	}
	b.c.fetches.WithLabelValues(result).Inc()
}
