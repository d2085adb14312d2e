package mirror

import (
	"context"
	"net/http"
	"sync"

	"golang.org/x/sync/semaphore"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
)

// DefaultMaxConcurrentFills bounds the fills that run at once; the rest
// queue. containerd fetches three layers of an image at a time, and a
// node pulls a few images at once (the kubelet pulls one at a time unless
// told otherwise), so a node under a heavy rollout runs a few tens of
// fills, peers' requests included. 64 leaves room for that, and holds a
// flood of cold requests to 64 downloads: 64 copy buffers (16 MiB), 64
// temporary files and 64 upstream connections.
//
// Only blob fills take a slot (fillSlot). A manifest fill, by tag (its
// body already read into memory) or by digest (capped at
// maxManifestSize), is small and short, and an image cannot start without
// its manifests: queued behind slow layer downloads during a rollout, it
// would miss containerd's 30 s for the answer.
const DefaultMaxConcurrentFills = 64

// WithMaxConcurrentFills bounds how many fills run at once (see
// DefaultMaxConcurrentFills). A fill beyond it waits for one to end, as
// long as the request that starts it waits. Zero means
// DefaultMaxConcurrentFills; a negative value means no bound.
func WithMaxConcurrentFills(n int) Option {
	return func(s *Server) {
		if n == 0 {
			n = DefaultMaxConcurrentFills
		}
		s.maxFills = n
	}
}

// withFillWaitHook calls hook each time a fill starts waiting for a slot,
// so tests see the queue without polling.
func withFillWaitHook(hook func()) Option { return func(s *Server) { s.onFillWait = hook } }

// fillSlots is the bound on fills running at once; nil means none.
type fillSlots struct {
	sem *semaphore.Weighted
}

func newFillSlots(n int) *fillSlots {
	if n < 0 {
		return nil
	}
	return &fillSlots{sem: semaphore.NewWeighted(int64(n))}
}

// errFillTimeout answers a request whose fill waited for a slot for the
// whole fill timeout.
var errFillTimeout = ocierr.Errorf(http.StatusServiceUnavailable, ocierr.CodeUnavailable, "too many downloads in progress; try again")

// fillSlot takes a slot for q's fill if it needs one: only blob fills
// do (see DefaultMaxConcurrentFills). A fill that needs none gets a
// release that does nothing.
func (s *Server) fillSlot(q *request, fillCtx context.Context) (release func(), err error) {
	if q.route.kind != ociref.KindBlobs {
		return func() {}, nil
	}
	return s.takeFillSlot(q.r.Context(), fillCtx)
}

// takeFillSlot waits for a slot for a fill, as long as both the request (reqCtx)
// and the fill (fillCtx: its timeout, the server's Close) do. It returns
// the slot's release, to call once, when the fill ends or does not begin.
func (s *Server) takeFillSlot(reqCtx, fillCtx context.Context) (release func(), err error) {
	if s.slots == nil {
		return func() {}, nil
	}
	if s.slots.sem.TryAcquire(1) {
		return sync.OnceFunc(s.slots.release), nil
	}
	ctx, cancel := context.WithCancelCause(fillCtx)
	defer cancel(nil)
	defer context.AfterFunc(reqCtx, func() { cancel(context.Cause(reqCtx)) })()
	s.metrics.fillWaiting(1)
	defer s.metrics.fillWaiting(-1)
	if s.onFillWait != nil {
		s.onFillWait()
	}
	if err := s.slots.sem.Acquire(ctx, 1); err != nil {
		if reqCtx.Err() != nil {
			return nil, reqCtx.Err()
		}
		return nil, errFillTimeout
	}
	return sync.OnceFunc(s.slots.release), nil
}

func (f *fillSlots) release() { f.sem.Release(1) }
