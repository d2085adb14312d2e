package diskstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"nodecache/internal/blobio"
)

// NewReader returns a reader of the fill's content starting at off. Reads
// block until bytes are available or ctx is done. If the fill is aborted
// before its content is verified, reads fail with an error matching
// ErrAborted. The caller must Close it. A fill whose entry was deleted
// while its commit ran (Fill.dropped) takes no new reader, as a removed
// entry serves none: that fails with ErrSpilled, and the caller fetches
// its own copy.
func (f *Fill) NewReader(ctx context.Context, off int64) (*Reader, error) {
	if f.isDropped() {
		return nil, fmt.Errorf("%w: %s was deleted while its commit ran", ErrSpilled, f.digest)
	}
	f.mu.Lock()
	done, err, verified := f.done, f.err, f.verified
	r := &Reader{ctx: ctx, fill: f, file: f.file, off: off}
	if !done && f.sp != nil && off < f.sp.start {
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: %s has moved past offset %d", ErrSpilled, f.digest, off)
	}
	if !done {
		if f.readers == nil {
			f.readers = make(map[*Reader]struct{})
		}
		f.readers[r] = struct{}{}
	}
	f.mu.Unlock()
	switch {
	case !done:
		return r, nil
	case errors.Is(err, ErrSpilled):
		// Not a broken download: this reader came too late to share it.
		return nil, fmt.Errorf("%w: %s streamed uncached", ErrSpilled, f.digest)
	case err != nil && verified:
		// Verified, then not stored: the same for a latecomer.
		return nil, fmt.Errorf("%w: %s was verified but could not be stored: %w", ErrSpilled, f.digest, err)
	case err != nil:
		return nil, err
	}
	// Committed: the fill's own descriptor may be closed already, so read
	// the committed file. If it was removed since (evicted, deleted), the
	// bytes were good but are gone: like a latecomer to a spilled fill,
	// the reader fetches its own copy.
	file, err := os.Open(f.store.path(f.digest))
	if err != nil {
		return nil, fmt.Errorf("%w: %s was committed and then removed: %w", ErrSpilled, f.digest, err)
	}
	return &Reader{ctx: ctx, fill: f, file: file, own: true, off: off}, nil
}

// isDropped reports whether f's entry was deleted while its commit ran.
func (f *Fill) isDropped() bool {
	f.store.mu.Lock()
	defer f.store.mu.Unlock()
	return f.dropped
}

// Reader reads a Fill as it is being written. It is not safe for
// concurrent use; create one per client.
type Reader struct {
	ctx    context.Context
	fill   *Fill
	file   *os.File // the fill's descriptor, or the committed file if own
	own    bool
	off    int64
	closed bool
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.own {
		return r.readCommitted(p)
	}
	f := r.fill
	for {
		f.mu.Lock()
		limit, done, err, wake := f.written, f.done, f.err, f.wake
		// Verified, the content is final and whole: a commit that fails
		// after that takes nothing from a reader that has the file.
		verified := f.verified || (done && err == nil)
		if err != nil && !f.verified {
			f.mu.Unlock()
			return 0, err
		}
		// Until verified, the last byte is held back.
		limit = blobio.Releasable(limit, verified)
		if sp := f.sp; sp != nil && r.off >= sp.fileEnd && r.off < limit {
			n := copy(p, sp.buf[r.off-sp.start:limit-sp.start])
			r.off += int64(n)
			f.signalLocked() // the writer may be waiting for room
			f.mu.Unlock()
			return n, nil
		}
		if f.sp != nil {
			limit = min(limit, f.sp.fileEnd)
		}
		f.mu.Unlock()
		if r.off < limit {
			n := min(int64(len(p)), limit-r.off)
			n2, err := r.file.ReadAt(p[:n], r.off)
			if err == io.EOF {
				err = nil // the file holds at least limit bytes
			}
			f.mu.Lock()
			r.off += int64(n2)
			f.mu.Unlock()
			return n2, err
		}
		if verified {
			return 0, io.EOF
		}
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// readCommitted reads the committed file of a fill that had ended when
// the reader was created.
func (r *Reader) readCommitted(p []byte) (int, error) {
	n, err := r.file.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Close releases the reader.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.own {
		return r.file.Close()
	}
	f := r.fill
	f.mu.Lock()
	delete(f.readers, r)
	f.signalLocked() // a spilling writer may wait on this reader
	closeNow := len(f.readers) == 0 && f.done
	f.mu.Unlock()
	if closeNow {
		f.file.Close()
	}
	return nil
}

// Verified waits until the fill's content has been checked against its
// digest and size, and returns nil if it matched. It returns the fill's
// error if the fill was aborted before, and ctx's if ctx ends first. A
// commit failing after the check does not change the answer.
func (f *Fill) Verified(ctx context.Context) error {
	return f.await(ctx, func() (bool, error) {
		switch {
		case f.verified, f.done && f.err == nil:
			return true, nil
		case f.done:
			return true, f.err
		}
		return false, nil
	})
}

// IsVerified reports whether the fill's content has been checked against
// its digest and size and matched: every byte is then on the disk, and
// only the commit may be under way.
func (f *Fill) IsVerified() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verified || (f.done && f.err == nil)
}

// Ended waits until the fill is committed, and returns nil, or aborted,
// and returns its error; or until ctx ends, and returns ctx's error. A
// fill whose commit failed after its content was verified has ended with
// an error too: nothing was stored.
func (f *Fill) Ended(ctx context.Context) error {
	return f.await(ctx, func() (bool, error) { return f.done, f.err })
}

// await waits until cond, called with f.mu held, reports that it holds,
// and returns its error; or until ctx ends.
func (f *Fill) await(ctx context.Context, cond func() (bool, error)) error {
	for {
		f.mu.Lock()
		ok, err := cond()
		wake := f.wake
		f.mu.Unlock()
		if ok {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settleTimeout bounds how long a Stat or a Delete waits for the commit
// of a verified fill (settle). The commit is an fsync and a rename, done
// in milliseconds, or a second or two behind a large writeback; a disk
// that takes longer is failing or hung, and a request held on it would
// be held for as long. Past the bound the answer is the one that is safe
// without the commit: Stat misses (the caller fetches the content again),
// and Delete makes the commit, when it lands, remove what it put in
// place (see Fill.dropped).
const settleTimeout = 5 * time.Second

// settle waits, up to settleTimeout, for the commit of a fill whose
// content is verified, so that the answer about the entry follows it. A
// fill not yet verified is not waited for. It reports false if the
// commit was still under way at the bound.
func (f *Fill) settle() bool {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	return f.settleCtx(ctx)
}

// settleCtx is settle until ctx ends. A verified fill's deferred commit
// runs at once.
func (f *Fill) settleCtx(ctx context.Context) bool {
	if f.IsVerified() {
		f.hurryCommit()
	}
	return f.await(ctx, func() (bool, error) { return !f.verified || f.done, nil }) == nil
}
