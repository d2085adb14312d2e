package upstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The retry budget. containerd gives up on a mirror that has not sent
// response headers within 30 s, and a retry is only worth making while
// containerd still waits for our answer, so the budget keeps the sleeping
// of one request well below that.
const (
	// maxAttempts is how often one endpoint is asked before its answer
	// stands: one try and two retries. A registry that fails three times
	// in a row within seconds is having more than a blip.
	maxAttempts = 3

	// baseBackoff is the first wait; it doubles per retry.
	baseBackoff = 250 * time.Millisecond

	// maxBackoff caps one computed wait.
	maxBackoff = 2 * time.Second

	// maxRetryAfter caps a server's Retry-After: a registry asking for a
	// minute is better answered with its 429 at once than with a client
	// that times out waiting for us.
	maxRetryAfter = 5 * time.Second

	// maxRetryWait bounds the total sleep of one request across retries
	// and endpoints, keeping the worst case (plus the requests themselves)
	// inside containerd's 30 s.
	maxRetryWait = 10 * time.Second
)

// SleepFunc waits d or until ctx ends, returning ctx's error in that case.
type SleepFunc func(ctx context.Context, d time.Duration) error

// sleepCtx is the real SleepFunc.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryState is the retry budget of one request.
type retryState struct {
	waited time.Duration
	// unanswered counts the attempts that got no answer, for the circuit.
	unanswered int
	// redirected: an attempt failed at a host the registry redirected
	// to, so the registry answered, though the request got nothing.
	redirected bool
	// deadline is when the first-response budget runs out; zero if none.
	deadline time.Time
}

// fits reports whether the first-response budget leaves room to wait d
// and still make a request.
func (st *retryState) fits(d time.Duration) bool {
	return st.deadline.IsZero() || time.Until(st.deadline) > d
}

// retrying runs attempt until it returns an answer that should not be
// retried, the endpoint's attempts are used up or the request's wait
// budget is spent. Only GET and HEAD reach here (checkRequest), and both
// are idempotent.
func (c *Client) retrying(ctx context.Context, registry string, st *retryState, attempt func() (*Response, error)) (*Response, error) {
	for n := 1; ; n++ {
		resp, err := attempt()
		switch {
		case err != nil && unanswered(ctx, err):
			st.unanswered++
		case errors.Is(err, errRedirectTarget):
			st.redirected = true
		}
		if n >= maxAttempts || !retryable(ctx, resp, err) {
			return resp, err
		}
		var hdr http.Header
		if resp != nil {
			hdr = resp.Header
		}
		wait := c.retryWait(n, hdr)
		if st.waited+wait > maxRetryWait || !fitsDeadline(ctx, wait) || !st.fits(wait) {
			return resp, err
		}
		if resp != nil {
			discard(resp.Response)
		}
		st.waited += wait
		if serr := c.sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("registry %s: waiting to retry: %w", registry, serr)
		}
	}
}

// retryable: no response came back (but the caller is still waiting, and
// it was not a redirect loop or a refused redirect), or the registry is overloaded or failing.
func retryable(ctx context.Context, resp *Response, err error) bool {
	if err != nil {
		return ctx.Err() == nil && errors.Is(err, ErrUnreachable) &&
			!errors.Is(err, errTooManyRedirects) && !errors.Is(err, ErrRedirectRefused)
	}
	return retryableStatus(resp.StatusCode)
}

// retryableStatus is 429 and the 5xx that describe a passing state; 501
// and 505 describe the server and will not change on a retry.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryWait is the wait before retry n (1-based): the server's
// Retry-After if it sent a usable one, capped at maxRetryAfter, else
// exponential backoff with jitter.
func (c *Client) retryWait(n int, h http.Header) time.Duration {
	if d, ok := parseRetryAfter(h.Get("Retry-After"), c.now()); ok {
		return min(d, maxRetryAfter)
	}
	d := min(baseBackoff<<(n-1), maxBackoff)
	// Equal jitter: half fixed, half random, so that nodes failing
	// together do not retry together, yet each waits at least d/2.
	return d/2 + rand.N(d/2+1)
}

// retryAfterClamp bounds a delay-seconds value before it becomes a
// Duration: a century, far above any cap and far below overflow.
const retryAfterClamp = 100 * 365 * 24 * 3600

// parseRetryAfter reads delay-seconds or an HTTP-date. A date in the past
// is a zero wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 63); err == nil {
		// Clamp before converting: a huge value must not overflow into a
		// short wait. Any clamp above maxRetryAfter gives the same result.
		secs = min(secs, retryAfterClamp)
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// fitsDeadline reports whether ctx leaves room to wait d and still make a
// request. If not, the answer in hand is better than a context error.
func fitsDeadline(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) > d
}
