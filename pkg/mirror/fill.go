package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/pkg/diskstore"
)

// fillBufferSize is the copy buffer of one fill: large enough that a fast
// upstream costs few syscalls, small enough that many fills stay cheap.
const fillBufferSize = 256 << 10

// maxOwnFlights bounds how often a client with credentials starts over
// after a flight failed for want of credentials: a flight it joined used
// its starter's, and this client's may do better.
const maxOwnFlights = 3

// maxLooks bounds how often obtain looks in the store. A flight that lands
// landedLookAgain sends its callers back to the store, where they find d
// committed or being filled; only a store that loses d as fast as it is
// filled, or a client starting over with its own credentials
// (maxOwnFlights), needs more than two looks.
const maxLooks = 2 + maxOwnFlights + 3

// errLooksExhausted answers a request whose digest never settled in the
// store within maxLooks.
var errLooksExhausted = ocierr.Errorf(http.StatusServiceUnavailable, ocierr.CodeUnavailable, "the store kept losing the content; try again")

// lookup finds d in the store: committed, or being filled. ok is false on
// a miss.
func (s *Server) lookup(d digest.Digest) (c content, ok bool, err error) {
	found, err := s.store.Lookup(d)
	if err != nil {
		return nil, false, err
	}
	switch found.Presence {
	case diskstore.Committed:
		info := found.Info
		return &storedFile{contentInfo: contentInfo{digest: d, size: info.Size, mediaType: info.MediaType, public: info.Public}, file: found.File}, true, nil
	case diskstore.BeingFilled:
		return joinFillingContent(s.running.of(found.Fill)), true, nil
	}
	return nil, false, nil
}

// obtain returns d from the store, starting a fill if it is missing.
// Concurrent callers for the same digest share one flight, so one download:
// all but the first wait for it to start, then read the same fill.
func (s *Server) obtain(q *request, d digest.Digest, header http.Header) (content, error) {
	ownFlights := 0
	for range maxLooks {
		if err := q.r.Context().Err(); err != nil {
			return nil, err // gone while its flight waited for a fill slot
		}
		c, ok, err := s.lookup(d)
		if ok || err != nil {
			if fc, filling := c.(*fillingContent); filling && !fc.local {
				s.metrics.joinedFill()
			}
			return c, err
		}
		l, started, err := s.flights.fly(q.r.Context(), d, func() (landing, error) {
			return s.startFill(q, d, func(ctx context.Context) (fillSource, error) {
				return s.openSource(ctx, q, d, header)
			})
		})
		if err != nil {
			if !q.auth.IsZero() && isAuthRequired(err) && ownFlights < maxOwnFlights {
				ownFlights++
				continue
			}
			return nil, err
		}
		switch l.kind {
		case landedLookAgain:
			continue
		case landedUncached:
			if l.stream.claim() {
				return uncachedContent(d, l.stream.src, l.stream.cancel), nil
			}
			return s.fetchUncached(q, d, header)
		}
		if !started || !l.began {
			s.metrics.joinedFill() // this caller did not begin the fill
		}
		return newFillingContent(*l.fill), nil
	}
	return nil, errLooksExhausted
}

// startFill runs inside a flight. It checks the store again, because a fill
// may have been committed between the caller's miss and the start of this
// flight (the previous flight for d ends as soon as its fill starts), then
// opens the source (asks a peer or upstream) and starts copying it into a
// new fill. It lands on the fill, or on an uncached download if the store
// cannot take it.
func (s *Server) startFill(q *request, d digest.Digest, open func(context.Context) (fillSource, error)) (landing, error) {
	found, err := s.store.Lookup(d)
	switch {
	case err != nil:
		return landing{}, err
	case found.Presence == diskstore.BeingFilled:
		run := s.running.of(found.Fill)
		return landing{kind: landedFill, fill: &run}, nil
	case found.Presence == diskstore.Committed:
		found.File.Close()
		return landing{kind: landedLookAgain}, nil
	}
	// The fill outlives the request that started it: one client hanging up
	// must not cancel it for the others. Close ends it, and so does the
	// grace timer of a fill nobody reads (fillClients). The fill timeout
	// counts time without progress (progress.go).
	timeoutCtx, cancelTimeout, touch := progressContext(s.fillCtx, s.fillTimeout, s.now)
	ctx, stop := context.WithCancelCause(timeoutCtx)
	cancel := func() { stop(nil); cancelTimeout() }
	release, err := s.fillSlot(q, ctx)
	if err != nil {
		cancel()
		if q.r.Context().Err() != nil {
			return landing{kind: landedLookAgain}, nil // its other callers start over
		}
		return landing{}, err
	}
	src, err := open(ctx)
	if err != nil {
		release()
		cancel()
		return landing{}, err
	}
	src.body = progressBody{ReadCloser: src.body, touch: touch}
	fill, err := s.store.Begin(d, src.size, diskstore.Meta{MediaType: src.mediaType, Public: src.public})
	if cannotCache(err) {
		// The download keeps its slot until the stream is closed: it is
		// an upstream connection like any fill, and freeing the slot here
		// would let a flood of large blobs start one download each.
		s.log.LogAttrs(ctx, slog.LevelInfo, "streaming uncached", slog.String("registry", q.registry),
			slog.String("digest", d.String()), slog.Int64("bytes", src.size), slog.Any("reason", err))
		end := func() { cancel(); release() }
		return landing{kind: landedUncached, stream: &uncached{src: src, cancel: end}}, nil
	}
	if err != nil {
		release()
		src.body.Close()
		cancel()
		if errors.Is(err, diskstore.ErrExists) || errors.Is(err, diskstore.ErrFilling) {
			return landing{kind: landedLookAgain}, nil // another fill of d began, or committed, first
		}
		return landing{}, err
	}
	run := fillRun{fill: fill, peer: src.peer, clients: s.newFillClients(src.size, stop)}
	s.running.add(run)
	s.fills.Add(1)
	go func() {
		defer s.fills.Done()
		defer release()
		defer s.running.remove(fill)
		defer run.clients.ended()
		s.copyFill(ctx, cancel, q.registry, run, src, release)
	}()
	return landing{kind: landedFill, fill: &run, began: true}, nil
}

// copyFill copies a source into a fill and commits it, or aborts it if
// the bytes do not match. The commit waits for the store's fills to go
// quiet (diskstore.Fill.CommitWhenIdle), or for Close; the source and
// the fill slot (release, which may be called twice) are let go first.
func (s *Server) copyFill(ctx context.Context, cancel context.CancelFunc, registry string, run fillRun, src fillSource, release func()) {
	body, fill := src.body, run.fill
	s.metrics.fillStarted()
	downloaded := sync.OnceFunc(s.metrics.fillEnded) // the gauge counts downloads
	defer downloaded()
	defer cancel()
	defer body.Close()
	start := time.Now()
	var dst io.Writer = fill
	if run.clients != nil {
		dst = countingWriter{w: fill, n: &run.clients.written}
	}
	n, err := io.CopyBuffer(dst, body, make([]byte, fillBufferSize))
	if err != nil && errors.Is(context.Cause(ctx), errNoClients) {
		err = errNoClients
	}
	if err == nil {
		downloaded()
		body.Close()
		release()
		err = fill.CommitWhenIdle(s.fillCtx)
	} else {
		fill.Abort(err)
	}
	attrs := []slog.Attr{
		slog.String("registry", registry), slog.String("digest", fill.Digest().String()),
		slog.Int64("bytes", n), slog.Duration("duration", time.Since(start)),
	}
	switch {
	case src.peer != "" && (errors.Is(err, diskstore.ErrDigestMismatch) || errors.Is(err, diskstore.ErrSizeMismatch)):
		s.peerCorrupt(src.peer, fill.Digest())
		s.log.LogAttrs(ctx, slog.LevelWarn, "peer sent content not matching its digest", append(attrs, slog.String("peer", src.peer), slog.Any("error", err))...)
	case errors.Is(err, errNoClients):
		s.metrics.fillUnread()
		s.log.LogAttrs(ctx, slog.LevelInfo, "fill stopped: nobody read it", attrs...)
	case errors.Is(err, diskstore.ErrNoSpace):
		s.log.LogAttrs(ctx, slog.LevelInfo, "fill streamed uncached", append(attrs, slog.Any("reason", err))...)
	case err != nil:
		s.log.LogAttrs(ctx, slog.LevelWarn, "fill failed", append(attrs, slog.Any("error", err))...)
	default:
		s.log.LogAttrs(ctx, slog.LevelDebug, "fill committed", attrs...)
	}
}

// Close ends the fills still running and waits for them: each is aborted,
// its temporary file removed, and nothing partial is committed. Call it
// after the HTTP servers have shut down, when no client is left to read
// the fills; a fill that completed before is committed as usual.
func (s *Server) Close() {
	s.stopFills()
	s.fills.Wait()
}
