package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"nodecache/internal/blobio"
	"nodecache/internal/ociref"
)

// maxResumes bounds how often one blob body is resumed. A transfer that
// breaks more often than this is not going to finish; failing lets the
// caller's fill fail and a later request start afresh.
const maxResumes = 5

// ErrResume means a broken blob transfer could not be resumed: the budget
// was spent, or the registry's answer to the Range request did not
// continue the same bytes.
var ErrResume = errors.New("upstream transfer could not be resumed")

// resumable reports whether resp's body is blob bytes whose transfer can
// be resumed with a Range request: a whole blob (a 200 to a GET without
// Range), or a blob's tail (the answer to "Range: bytes=N-"). Any other
// Range is the caller's own and passes through untouched.
func resumable(r Request, resp *Response) bool {
	if r.Method != http.MethodGet || r.Kind != ociref.KindBlobs {
		return false
	}
	if r.Header.Get("Range") == "" {
		return resp.StatusCode == http.StatusOK
	}
	_, ok := tailStart(r.Header.Get("Range"))
	return ok && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent)
}

// tailStart returns N of "bytes=N-".
func tailStart(rng string) (int64, bool) {
	v, ok := strings.CutPrefix(rng, "bytes=")
	if !ok {
		return 0, false
	}
	v, ok = strings.CutSuffix(v, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

// resumingBody delivers a blob's bytes in order, reopening the transfer
// from the byte reached when it breaks. The caller still verifies the
// digest; this body only guarantees that the bytes it delivers are the
// bytes the registry sent at those offsets.
type resumingBody struct {
	// ctx is the context of the Fetch that opened the body. A body is read
	// after Fetch returns, and resuming is part of reading it, so it keeps
	// the request's context as http.Response bodies do.
	ctx  context.Context
	c    *Client
	r    Request
	ep   endpoint
	cr   creds
	size int64 // Content-Length of the first answer, -1 if unknown

	// Read's own state; Read is not called concurrently.
	read    int64 // bytes delivered
	resumes int
	failed  error

	// mu guards body and closed, so Close may run during a Read.
	mu     sync.Mutex
	body   io.ReadCloser
	closed bool
}

// resumeBody makes resp's body resume when it breaks. For a tail
// ("Range: bytes=N-") the answer is checked to start at N, and a 200 (a
// registry that ignores Range) is turned into the 206 that was asked for,
// so callers always get the blob from N on, or an error wrapping
// ErrResume.
func (c *Client) resumeBody(ctx context.Context, r Request, ep endpoint, cr creds, resp *Response) error {
	b := &resumingBody{ctx: ctx, c: c, r: r, ep: ep, cr: cr, size: resp.ContentLength, body: resp.Body}
	if start, ok := tailStart(r.Header.Get("Range")); ok {
		b.read, b.size = start, -1
		if err := b.continues(resp.Response); err != nil {
			return fmt.Errorf("%w: registry %s: blob %s from byte %d: %w", ErrResume, r.Registry, r.Ref, start, err)
		}
		if resp.StatusCode == http.StatusOK {
			b.size = resp.ContentLength
			resp.StatusCode, resp.Status = http.StatusPartialContent, "206 Partial Content"
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
			if b.size >= 0 {
				resp.ContentLength = b.size - start
				resp.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, b.size-1, b.size))
			}
		} else if cr, err := blobio.ParseContentRange(resp.Header.Get("Content-Range")); err == nil {
			b.size = cr.Total
		}
	}
	resp.Body = b
	return nil
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		body, err := b.current()
		if err != nil {
			return 0, err
		}
		n, err := body.Read(p)
		b.read += int64(n)
		if err == nil || (err == io.EOF && (b.size < 0 || b.read == b.size)) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.broken(err)
		if n > 0 {
			return n, nil // the next Read resumes or reports the failure
		}
	}
}

// current returns the body to read, reopening the transfer if it broke.
func (b *resumingBody) current() (io.ReadCloser, error) {
	if b.failed != nil {
		return nil, b.failed
	}
	b.mu.Lock()
	body, closed := b.body, b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return nil, errors.New("read from closed blob body")
	case body != nil:
		return body, nil
	}
	body, err := b.reopen()
	if err != nil {
		b.failed = err
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = body.Close()
		return nil, errors.New("read from closed blob body")
	}
	b.body = body
	return body, nil
}

// broken drops the current body after err, and records err as final if
// the transfer may not be resumed.
func (b *resumingBody) broken(err error) {
	b.mu.Lock()
	if b.body != nil {
		_ = b.body.Close()
		b.body = nil
	}
	b.mu.Unlock()
	switch {
	case b.ctx.Err() != nil:
		b.failed = fmt.Errorf("registry %s: blob %s: %w", b.r.Registry, b.r.Ref, err)
	case b.resumes >= maxResumes:
		b.failed = fmt.Errorf("%w: registry %s: blob %s: broke %d times, last after %d bytes: %w",
			ErrResume, b.r.Registry, b.r.Ref, b.resumes+1, b.read, err)
	}
}

// reopen asks the same endpoint, with the same credentials, for the bytes
// from b.read on.
func (b *resumingBody) reopen() (io.ReadCloser, error) {
	b.resumes++
	r := b.r
	r.Header = r.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set("Range", fmt.Sprintf("bytes=%d-", b.read))
	var st retryState
	resp, err := b.c.retrying(b.ctx, r.Registry, &st, func() (*Response, error) {
		return b.c.attempt(b.ctx, r, b.ep, b.cr)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: registry %s: blob %s at byte %d: %w", ErrResume, r.Registry, r.Ref, b.read, err)
	}
	if err := b.continues(resp.Response); err != nil {
		discard(resp.Response)
		return nil, fmt.Errorf("%w: registry %s: blob %s at byte %d: %w", ErrResume, r.Registry, r.Ref, b.read, err)
	}
	return resp.Body, nil
}

// continues checks that resp carries the blob from b.read on. A 200 (a
// registry or CDN that ignores Range) is accepted after skipping the
// bytes already delivered.
func (b *resumingBody) continues(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := blobio.ParseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return err
		case cr.Start != b.read:
			return fmt.Errorf("Content-Range starts at %d, asked for %d", cr.Start, b.read)
		case b.size >= 0 && cr.Total >= 0 && cr.Total != b.size:
			return fmt.Errorf("Content-Range total %d, blob is %d bytes", cr.Total, b.size)
		}
		return nil
	case http.StatusOK:
		if b.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != b.size {
			return fmt.Errorf("200 with %d bytes, blob is %d", resp.ContentLength, b.size)
		}
		if n, err := io.CopyN(io.Discard, resp.Body, b.read); err != nil {
			return fmt.Errorf("200 instead of 206: skipping %d bytes: got %d: %w", b.read, n, err)
		}
		return nil
	}
	return fmt.Errorf("status %d to a Range request", resp.StatusCode)
}

func (b *resumingBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.body == nil {
		return nil
	}
	err := b.body.Close()
	b.body = nil
	return err
}
