package diskstore

import (
	"fmt"
	"os"
)

// spillWindow bounds the memory of a fill that lost its disk mid-way: the
// bytes between its slowest reader and the writer. When the window is full
// the writer waits, so the download slows to the slowest client instead of
// growing without bound.
const spillWindow = 8 << 20

// spill holds the bytes of a fill that arrived after a write to its file
// failed (disk full, I/O error), or after a fill of unknown size outgrew
// the store's bounds. The fill then streams on to the readers it already
// has, from memory, and is verified but never committed. When the last of
// them leaves, nothing is left to stream to, and the fill ends.
type spill struct {
	cause   error  // why the fill left its file
	fileEnd int64  // bytes in the file; later bytes are in buf
	start   int64  // offset of buf[0]
	buf     []byte // bytes from start to the fill's written count
}

// startSpill switches f to memory; what was written until then stays
// readable from the file. It takes f out of the store: no new reader can
// join, and its reservation is released.
func (f *Fill) startSpill(cause error) {
	s := f.store
	f.mu.Lock()
	f.sp = &spill{cause: cause, fileEnd: f.written, start: f.written}
	f.mu.Unlock()
	os.Remove(f.file.Name()) // open descriptors keep what was written
	s.mu.Lock()
	if s.fills[f.digest] == f {
		delete(s.fills, f.digest)
		s.reserved -= f.reserved
	}
	s.counts.PassThrough++
	s.mu.Unlock()
}

// spillWrite appends p to the memory window, waiting while the slowest
// reader is a full window behind. With no reader left it ends the fill,
// with an error matching ErrSpilled: no new reader can join a spilled
// fill, and going on would only hold its file's space on the disk.
func (f *Fill) spillWrite(p []byte) (int, error) {
	f.dg.Write(p)
	f.mu.Lock()
	for f.written-f.slowestLocked() >= spillWindow && len(f.readers) > 0 && !f.done {
		wake := f.wake
		f.mu.Unlock()
		<-wake
		f.mu.Lock()
	}
	if f.done {
		f.mu.Unlock()
		return 0, f.err
	}
	if len(f.readers) == 0 {
		f.mu.Unlock()
		err := fmt.Errorf("%w: %s: no reader left", ErrSpilled, f.digest)
		f.Abort(err)
		return 0, err
	}
	defer f.mu.Unlock()
	sp := f.sp
	sp.buf = append(sp.buf, p...)
	f.written += int64(len(p))
	if cut := f.slowestLocked() - sp.start; cut > 0 {
		sp.buf, sp.start = sp.buf[cut:], sp.start+cut
		if cap(sp.buf) > 4*spillWindow { // let go of a grown backing array
			sp.buf = append([]byte(nil), sp.buf...)
		}
	}
	f.signalLocked()
	return len(p), nil
}

// slowestLocked returns the offset of the slowest reader, or the written
// count if there is none (nothing in memory is needed then).
func (f *Fill) slowestLocked() int64 {
	low := f.written
	for r := range f.readers {
		low = min(low, r.off)
	}
	return max(low, f.sp.fileEnd)
}

// finishSpilled ends a fill that streamed from memory: the readers get
// the last byte if the content is right, and nothing is stored either way.
func (f *Fill) finishSpilled() error {
	if err := f.dg.Verify(); err != nil {
		f.Abort(err)
		return err
	}
	f.finish(nil)
	return fmt.Errorf("%w: %s streamed uncached: %w", ErrNoSpace, f.digest, f.sp.cause)
}
