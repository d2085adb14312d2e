package diskstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"nodecache/internal/blobio"
)

// NewReader returns a reader of the fill's content starting at off. Reads
// block until bytes are available or ctx is done. If the fill is aborted,
// reads fail with an error matching ErrAborted. The caller must Close it.
func (f *Fill) NewReader(ctx context.Context, off int64) (*Reader, error) {
	f.mu.Lock()
	done, err := f.done, f.err
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
	case err != nil:
		return nil, err
	}
	// Committed: the fill's own descriptor may be closed already, so read
	// the committed file.
	file, err := os.Open(f.store.path(f.digest))
	if err != nil {
		return nil, fmt.Errorf("%w: %s was committed and then removed: %w", ErrAborted, f.digest, err)
	}
	return &Reader{ctx: ctx, fill: f, file: file, own: true, off: off}, nil
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
		if err != nil {
			f.mu.Unlock()
			return 0, err
		}
		// Committed means verified; until then the last byte is held back.
		limit = blobio.Releasable(limit, done)
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
		if done {
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
