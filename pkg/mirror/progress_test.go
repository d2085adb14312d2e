package mirror

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// A fill context with no progress ends with a cause that is the fill
// timeout's DeadlineExceeded, so clients get the 504 they always got.
func TestProgressContextEndsWithoutProgress(t *testing.T) {
	ctx, cancel, _ := progressContext(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	cause := context.Cause(ctx)
	var np noProgressError
	if !errors.As(cause, &np) || !errors.Is(cause, context.DeadlineExceeded) {
		t.Fatalf("cause %v, want a noProgressError wrapping DeadlineExceeded", cause)
	}
}

// Ending the context early is a plain cancel, not a timeout.
func TestProgressContextCancel(t *testing.T) {
	ctx, cancel, touch := progressContext(context.Background(), time.Hour)
	touch()
	cancel()
	cancel() // twice is fine
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		t.Fatalf("cause %v, want Canceled", cause)
	}
}

// An upstream fill that takes longer than the fill timeout but keeps
// sending completes: the timeout counts time without progress.
func TestSlowUpstreamFillOutlastsFillTimeout(t *testing.T) {
	const fillTimeout = 300 * time.Millisecond
	// 1 MiB at 1 MiB/s in small paced chunks: a second of transfer, over
	// three times the fill timeout, never silent for long.
	e := newEnv(t, []registrytest.Option{registrytest.WithThrottle(1 << 20)}, WithFillTimeout(fillTimeout))
	data := registrytest.Random(5, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	start := time.Now()
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes; want 200 and the blob", resp.StatusCode, len(body))
	}
	if took := time.Since(start); took < fillTimeout {
		t.Fatalf("the fill took %s, not longer than the fill timeout %s: the test proves nothing", took, fillTimeout)
	}
}
