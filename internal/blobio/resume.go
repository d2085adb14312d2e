package blobio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ErrResume means a broken transfer could not be continued: the budget
// was spent, or no source answered with the bytes from where it broke.
var ErrResume = errors.New("transfer could not be resumed")

// errClosed is returned by a Read after Close.
var errClosed = errors.New("read from closed body")

// Source is one place a blob's bytes can be read from.
type Source interface {
	// Open returns the blob's bytes from offset to the end: exactly those
	// (Continuation checks an HTTP answer for that), or an error.
	Open(ctx context.Context, offset int64) (io.ReadCloser, error)
	// Name names the source in logs and errors.
	Name() string
}

// Transfer is a blob transfer under way, for NewResumer.
type Transfer struct {
	Body   io.ReadCloser // the first answer's body, starting at Offset
	From   string        // names the source that sent Body, in logs and errors
	Offset int64         // the blob offset Body starts at
	Size   int64         // the blob's full size; -1 if not known
	// Sources are where the transfer continues after a break, in order:
	// the first break asks Sources[0], the next Sources[1], and so on,
	// the last as often as the budget allows. A source that sent Body and
	// can resume it is listed here too.
	Sources []Source
	// Budget is how many times the transfer may be continued; zero means
	// never (the first break is final). A transfer that breaks more often
	// is not going to finish; failing lets the caller start afresh later.
	Budget int
	// OnBreak, if set, is called when a body breaks and the transfer is
	// to continue, with the source that broke, the offset reached and why.
	OnBreak func(from string, offset int64, err error)
}

// Resumer delivers a blob's bytes in order. When a body breaks (an error,
// or io.EOF before Size bytes) it asks the next of its Sources for the
// rest with Open(ctx, offset): Sources[0] after the first body, then
// Sources[1], and the last one again each time once the list is spent.
// It continues at most Budget times in all. It does not verify content:
// wrap it in a Verifier for that. It guarantees only that the bytes it
// delivers are the bytes its sources sent at those offsets.
//
// Read must not be called concurrently; Close may be called at any time,
// from any goroutine, and ends a Read in progress if the body's Close does.
type Resumer struct {
	// ctx is the context of the request that opened the transfer.
	// Resuming is part of reading the body, so it keeps the request's
	// context as http.Response bodies do.
	ctx     context.Context
	from    string // the name of the first body's source
	sources []Source
	size    int64
	budget  int
	onBreak func(from string, offset int64, err error)

	// Read's own state.
	src     int   // index in sources of the current or last body; -1 for the first
	read    int64 // offset of the next byte
	resumes int
	failed  error

	// mu guards body and closed, so that Close may run during a Read.
	mu     sync.Mutex
	body   io.ReadCloser // nil between a break and the next Open
	closed bool
}

// NewResumer returns a Resumer of t, whose Body it now owns. t.Sources
// must not be empty unless t.Budget is zero.
func NewResumer(ctx context.Context, t Transfer) *Resumer {
	return &Resumer{
		ctx: ctx, from: t.From, sources: t.Sources, size: t.Size, budget: t.Budget, onBreak: t.OnBreak,
		src: -1, read: t.Offset, body: t.Body,
	}
}

// Read implements io.Reader.
func (r *Resumer) Read(p []byte) (int, error) {
	for {
		body, err := r.current()
		if err != nil {
			return 0, err
		}
		n, err := body.Read(p)
		r.read += int64(n)
		// More bytes than the size are a Verifier's to reject.
		if err == nil || (err == io.EOF && (r.size < 0 || r.read >= r.size)) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.broken(err)
		if n > 0 {
			return n, nil // the next Read continues or reports the failure
		}
	}
}

// current returns the body to read, opening the next one after a break.
func (r *Resumer) current() (io.ReadCloser, error) {
	if r.failed != nil {
		return nil, r.failed
	}
	r.mu.Lock()
	body, closed := r.body, r.closed
	r.mu.Unlock()
	switch {
	case closed:
		return nil, errClosed
	case body != nil:
		return body, nil
	}
	next := min(r.src+1, len(r.sources)-1)
	r.resumes++
	src := r.sources[next]
	body, err := src.Open(r.ctx, r.read)
	if err != nil {
		r.failed = fmt.Errorf("%w: %s at byte %d: %w", ErrResume, src.Name(), r.read, err)
		return nil, r.failed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		_ = body.Close()
		return nil, errClosed
	}
	r.body, r.src = body, next
	return body, nil
}

// broken drops the current body after err, and records err as final if
// the transfer may not continue.
func (r *Resumer) broken(err error) {
	r.mu.Lock()
	if r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
	r.mu.Unlock()
	from := r.from
	if r.src >= 0 {
		from = r.sources[r.src].Name()
	}
	switch {
	case r.ctx.Err() != nil:
		r.failed = fmt.Errorf("%s: %w", from, err)
	case r.resumes >= r.budget:
		r.failed = fmt.Errorf("%w: %s: broke %d times, last after %d bytes: %w",
			ErrResume, from, r.resumes+1, r.read, err)
	case r.onBreak != nil:
		r.onBreak(from, r.read, err)
	}
}

// Close ends the transfer. A Read after Close fails.
func (r *Resumer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}
