package mirror

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// An upstream that never sends its headers makes the fill run out of its
// --fill-timeout. That is the upstream's failure, a 504 the client may
// retry, not nodecache's own 500, and the answer does not carry the
// upstream's internal URL.
func TestFillTimeoutBeforeHeadersIs504(t *testing.T) {
	const fillTimeout = 100 * time.Millisecond
	e := newEnv(t, nil, WithFillTimeout(fillTimeout))
	d := e.up.PushBlob(t, "test/app", registrytest.Random(1, 1000))
	held := registrytest.NewGate() // never released: upstream never answers
	e.up.SetFault(e.up.NoHeaders(held, registrytest.Route(http.MethodGet, registrytest.KindBlobs)))
	// The fill timeout counts silence by the server's clock, the env's
	// fake one: it passes once upstream holds the request.
	go func() {
		if held.WaitHeld(t.Context(), 1) == nil {
			e.advance(2 * fillTimeout)
		}
	}()

	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), nil)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d %s, want 504", resp.StatusCode, body)
	}
	if strings.Contains(string(body), e.up.URL()) {
		t.Errorf("body %s names the upstream URL", body)
	}
}
