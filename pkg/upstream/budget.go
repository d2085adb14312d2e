package upstream

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errBudgetSpent is why a request's context ended when its first-response
// budget ran out (WithFirstResponseBudget).
var errBudgetSpent = errors.New("first-response budget spent")

// firstResponse runs fetch on a context that ends if no response is in
// within the first-response budget, and that lasts, once a response is
// in, until its body is closed. fetch gets the retry state of the request,
// which knows the budget's deadline. A fetch the budget ended fails with
// ErrUnreachable, so the caller's error still reaches containerd in time.
//
// The budget runs on a real timer and time.Now, not the client's clock
// (WithClock), which only tells token expiry.
func (c *Client) firstResponse(ctx context.Context, registry string, fetch func(context.Context, *retryState) (*Response, error)) (*Response, error) {
	start := time.Now()
	if c.budget < 0 {
		st := &retryState{}
		resp, err := fetch(ctx, st)
		c.circuits.noteRequest(ctx, registry, start, st.unanswered, err)
		return resp, err
	}
	bctx, cancel := context.WithCancelCause(ctx)
	st := &retryState{deadline: time.Now().Add(c.budget)}
	timer := time.AfterFunc(c.budget, func() { cancel(errBudgetSpent) })
	resp, err := fetch(bctx, st)
	if !timer.Stop() && ctx.Err() == nil {
		if resp != nil {
			discard(resp.Response)
		}
		cancel(nil)
		if !st.redirected { // the budget went by at a redirect's target: the registry answered
			c.circuits.trip(registry, start)
		}
		return nil, fmt.Errorf("%w: registry %s: no answer within %s: %w", ErrUnreachable, registry, c.budget, errBudgetSpent)
	}
	c.circuits.noteRequest(ctx, registry, start, st.unanswered, err)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}
