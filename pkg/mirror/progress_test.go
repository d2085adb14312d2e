package mirror

import (
	"context"
	"errors"
	"testing"
	"time"
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
