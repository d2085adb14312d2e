package diskstore

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
)

// Fill writes one entry. One goroutine writes and then calls Commit or
// Abort; any number of Readers, created with NewReader, read concurrently.
//
// Readers are held back by one byte until the content is verified: a
// reader never sees the whole content before its digest and size are
// checked, so a client streaming a fill that fails verification cannot
// mistake what it got for a complete answer. The commit (fsync, rename)
// comes after that release, off the readers' path: until it is done the
// fill stays in progress, and new readers join it and read the verified
// temporary file. If the commit fails, the entry is simply not stored:
// readers that have the file go on reading it, and later ones are turned
// away with ErrSpilled, as from a fill that lost its disk.
type Fill struct {
	store    *Store
	key      key
	tail     *[32]byte // second half of a sha512 digest, for the index
	digest   digest.Digest
	size     int64 // expected size; -1 if unknown
	reserved int64 // bytes reserved in the store for this fill; guarded by store.mu
	// releasedSize is the content's size once it is verified and released,
	// and -1 before: Stats counts such a fill as stored while its commit
	// runs. Guarded by store.mu.
	releasedSize int64
	// dropped: the entry was deleted while its commit was under way and
	// the deleter would not wait for it (settleTimeout). The commit then
	// removes what it put in place instead of indexing it, so that the
	// deletion is not undone once the disk answers. Guarded by store.mu.
	dropped bool
	meta    Meta        // meta.Public is the value at Begin; see public
	public  atomic.Bool // MarkPublic may set it while the fill runs
	file    *os.File
	dg      *blobio.Digester // used by the writer only

	hurry     chan struct{} // closed to make a deferred commit run now (defer.go)
	hurryOnce sync.Once

	// mu guards the fields below.
	mu       sync.Mutex
	written  int64
	verified bool                 // digest and size checked: written is final and all of it may be read
	done     bool                 // committed or aborted
	err      error                // why the fill was aborted; nil once committed
	wake     chan struct{}        // closed and replaced whenever the fields above change
	readers  map[*Reader]struct{} // readers of the fill's descriptor; it closes once done and none are left
	sp       *spill               // set once a file write failed
}

// Meta is what is stored with an entry besides its bytes.
type Meta struct {
	MediaType string // "" for plain blobs
	// Public marks content that upstream serves without credentials; any
	// client may be given it. Private content (the zero value) is given
	// only to clients upstream confirms, and its file is not world
	// readable: the mode is how the mark survives a restart, and a file
	// whose mode was lost or never set reads back as private.
	Public bool
}

// Begin starts a fill of d. size is the expected size in bytes, or -1 if it
// is not known. meta is stored with the entry. It returns ErrExists if d is already committed and ErrFilling if another fill
// of d is in progress (see Filling).
//
// The expected size is reserved before anything is written, evicting the
// least recently used entries as needed. A fill that cannot be cached
// (larger than the maximum size, or no space and nothing left to evict, or
// a store that cannot be written) fails with ErrTooLarge or ErrNoSpace:
// the caller then streams the content uncached.
func (s *Store) Begin(d digest.Digest, size int64, meta Meta) (*Fill, error) {
	k, tail, err := keyOf(d)
	if err != nil {
		return nil, err
	}
	if s.maxSize > 0 && size > s.maxSize {
		s.notePassThrough()
		return nil, fmt.Errorf("%w: %s is %d bytes, the maximum is %d", ErrTooLarge, d, size, s.maxSize)
	}
	if err := s.checkAbsent(k, tail, d); err != nil {
		return nil, err
	}
	avail := s.available()
	if s.diskErr.failing.Load() && !s.roomOnDisk(size) {
		s.notePassThrough()
		return nil, fmt.Errorf("%w: the filesystem of %s is full", ErrNoSpace, s.root)
	}
	var file *os.File
	err = s.inTmp(func() (err error) {
		file, err = os.CreateTemp(s.tmpDir(), d.Encoded()[:16]+"-*")
		return err
	})
	if err != nil {
		s.diskErr.fail(s.log, err)
		s.notePassThrough()
		return nil, fmt.Errorf("%w: start fill of %s: %w", ErrNoSpace, d, err)
	}
	f := &Fill{
		store: s, key: k, tail: tail, digest: d, size: size, reserved: max(size, 0), releasedSize: -1, meta: meta,
		file: file, dg: blobio.NewDigester(d, size), wake: make(chan struct{}),
		hurry: make(chan struct{}),
	}
	f.public.Store(meta.Public)
	victims, err := s.register(f, avail, false)
	s.removeVictims(victims, "evicted")
	if errors.Is(err, errCommitsWaiting) {
		// Deferred commits hold room no eviction can free: commit them,
		// and try again with the entries they add.
		s.settleCommits()
		victims, err = s.register(f, s.available(), true)
		s.removeVictims(victims, "evicted")
	}
	if err != nil {
		file.Close()
		os.Remove(file.Name())
		return nil, err
	}
	return f, nil
}

// checkAbsent answers ErrExists if d is stored (its file, while the
// index loads) and ErrFilling if a fill of d is in progress.
func (s *Store) checkAbsent(k key, tail *[32]byte, d digest.Digest) error {
	_, ok := s.lockIndexed(k, tail, d, false)
	defer s.mu.Unlock()
	if ok {
		return ErrExists
	}
	if _, ok := s.fills[d]; ok {
		return ErrFilling
	}
	return nil
}

// register reserves room for f and makes it visible to Filling. If f
// does not fit while verified fills wait for their commits, and last is
// false, it fails with errCommitsWaiting: once those are committed, they
// can be evicted.
func (s *Store) register(f *Fill, avail int64, last bool) ([]victim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index.Peek(f.key); ok {
		return nil, ErrExists
	}
	if _, ok := s.fills[f.digest]; ok {
		return nil, ErrFilling
	}
	victims, fits := s.makeRoomLocked(f.reserved, avail)
	if !fits {
		if !last && s.anyCommittingLocked() {
			return victims, errCommitsWaiting
		}
		s.counts.PassThrough++
		return victims, fmt.Errorf("%w: %d bytes for %s do not fit", ErrNoSpace, f.reserved, f.digest)
	}
	s.reserved += f.reserved
	s.fills[f.digest] = f
	return victims, nil
}

func (s *Store) notePassThrough() {
	s.mu.Lock()
	s.counts.PassThrough++
	s.mu.Unlock()
}

// Digest returns the digest being filled.
func (f *Fill) Digest() digest.Digest { return f.digest }

// Size returns the expected size, or -1 if it is not known; once the
// content is verified, its size.
func (f *Fill) Size() int64 {
	if f.size >= 0 {
		return f.size
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.verified {
		return f.written
	}
	return -1
}

// MediaType returns the media type that will be stored with the entry.
func (f *Fill) MediaType() string { return f.meta.MediaType }

// Public reports whether the fill's content is public (see Meta).
func (f *Fill) Public() bool { return f.public.Load() }

// Write appends p to the fill. It fails with ErrSizeMismatch, and aborts
// the fill, as soon as more bytes arrive than the expected size.
//
// A fill of unknown size reserves room as it grows (see grow). When the
// bounds leave it no more, or a write to its file fails, the fill streams
// on to the readers it has from memory, uncached (see spill), and ends
// with an error matching ErrSpilled once none of them is left.
func (f *Fill) Write(p []byte) (int, error) {
	f.mu.Lock()
	written, done, spilled, err := f.written, f.done, f.sp != nil, f.err
	f.mu.Unlock()
	if done {
		return 0, cmp.Or(err, ErrAborted)
	}
	if f.size >= 0 && written+int64(len(p)) > f.size {
		err := fmt.Errorf("%w: %s: more than %d bytes", ErrSizeMismatch, f.digest, f.size)
		f.Abort(err)
		return 0, err
	}
	if !spilled && f.size < 0 {
		err := f.grow(written, written+int64(len(p)))
		if errors.Is(err, ErrAborted) {
			return 0, err
		}
		if err != nil {
			f.store.log.Info("fill of unknown size outgrew the store's bounds; streaming it uncached",
				"digest", f.digest, "bytes", written, "reason", err)
			f.startSpill(err)
			spilled = true
		}
	}
	if spilled {
		return f.spillWrite(p)
	}
	n, err := f.file.Write(p)
	f.store.deferral.noteWrite()
	f.dg.Write(p[:n])
	f.mu.Lock()
	f.written += int64(n)
	f.signalLocked()
	f.mu.Unlock()
	if err != nil {
		// The disk failed us mid-fill: stream the rest to the readers
		// from memory, uncached.
		f.store.diskErr.fail(f.store.log, err)
		f.startSpill(err)
		m, err := f.spillWrite(p[n:])
		return n + m, err
	}
	return n, nil
}

// Commit verifies the content against the digest and the expected size and,
// if it matches, releases the last byte to the readers and then makes the
// entry durable and visible. Otherwise it aborts the fill and returns an
// error matching ErrDigestMismatch or ErrSizeMismatch. If the content
// matched but cannot be made durable, Commit returns that error and
// nothing is stored; the readers still get every byte (see Fill).
func (f *Fill) Commit() error { return f.commitAfter(func() {}) }

// commitAfter is Commit, with wait called between the release of the
// last byte and the durable part (see CommitWhenIdle).
func (f *Fill) commitAfter(wait func()) error {
	f.mu.Lock()
	spilled := f.sp != nil
	f.mu.Unlock()
	if spilled {
		return f.finishSpilled()
	}
	if err := f.release(); err != nil {
		f.Abort(err)
		return err
	}
	wait()
	// Read once, after the wait (MarkPublic may have come during it):
	// the file's mode and the index must agree.
	public := f.public.Load()
	if err := f.commit(public); err != nil {
		// The file may have been in place for a moment, and a background
		// load may have read it: it is gone, as a removal is, before the
		// fill leaves s.fills (lockIndexed checks both under the lock).
		f.store.mu.Lock()
		f.store.goneLocked(f.key)
		f.store.mu.Unlock()
		f.Abort(err) // the readers keep the verified file they have
		return err
	}
	s := f.store
	s.mu.Lock()
	s.reserved -= f.reserved
	delete(s.fills, f.digest)
	if f.dropped {
		// Deleted while the commit ran: remove the files just put in
		// place, marked as being unlinked so that a new fill of the
		// digest waits for that before putting its own.
		v := s.unlinkingLocked(f.key, f.digest, f.written)
		s.mu.Unlock()
		s.removeVictims([]victim{v}, "deleted")
		f.finish(nil)
		return nil
	}
	r := record{size: f.written, used: s.now().Unix(), tail: f.tail,
		mediaType: s.mediaTypeIndexLocked(f.meta.MediaType), public: public}
	if old, ok := s.index.Peek(f.key); ok {
		// The load indexed the file of an earlier commit of d while
		// this fill ran: the same bytes, now this record.
		s.used -= old.size
	}
	s.index.Add(f.key, r)
	s.used += r.size
	// A fill of unknown size reserved nothing: make room now.
	victims, _ := s.makeRoomLocked(0, -1)
	s.mu.Unlock()
	s.removeVictims(victims, "evicted")
	s.diskErr.ok(s.log)
	// The file's mtime is the entry's last use after a restart.
	t := time.Unix(r.used, 0)
	_ = os.Chtimes(s.path(f.digest), t, t)
	f.finish(nil)
	return nil
}

// committingLocked returns d's fill if its content is verified and its
// commit under way (a fill leaves s.fills when its commit ends), or nil.
func (s *Store) committingLocked(d digest.Digest) *Fill {
	if f := s.fills[d]; f != nil && f.releasedSize >= 0 {
		return f
	}
	return nil
}

// release checks the content against its digest and size and, if it
// matches, lets the readers have the last byte.
func (f *Fill) release() error {
	f.mu.Lock()
	done, abortErr := f.done, f.err
	f.mu.Unlock()
	if done {
		return abortErr
	}
	if err := f.dg.Verify(); err != nil {
		return err
	}
	f.mu.Lock()
	f.verified = true
	written := f.written
	f.signalLocked()
	f.mu.Unlock()
	s := f.store
	s.mu.Lock()
	f.releasedSize = written
	s.mu.Unlock()
	s.step(StepReleased)
	return nil
}

// commit makes the verified content durable and puts it in place. If it
// fails, it takes away what it had put in place (the media type file, the
// renamed content file): the entry is not stored, and no file of it is
// left for the next start to index without a commit.
func (f *Fill) commit(public bool) (err error) {
	s := f.store
	final := s.path(f.digest)
	if err := ensureDir(filepath.Dir(final)); err != nil {
		return err
	}
	// An eviction of the same digest still unlinking must not remove what
	// we are about to put in place.
	s.waitDeleting(f.key)
	if f.meta.MediaType != "" {
		if err := s.inTmp(func() error {
			return writeFileAtomic(s.tmpDir(), final+typeSuffix, []byte(f.meta.MediaType))
		}); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.Remove(final + typeSuffix)
			}
		}()
		s.step(StepTypeWritten)
	}
	if public {
		if err := f.file.Chmod(publicMode); err != nil {
			return fmt.Errorf("diskstore: commit %s: %w", f.digest, err)
		}
	}
	s.step(StepWritten)
	if err := f.file.Sync(); err != nil {
		return fmt.Errorf("diskstore: sync %s: %w", f.digest, err)
	}
	s.step(StepSynced)
	if err := os.Rename(f.file.Name(), final); err != nil {
		return fmt.Errorf("diskstore: commit %s: %w", f.digest, err)
	}
	defer func() {
		if err != nil {
			os.Remove(final)
		}
	}()
	s.step(StepRenamed)
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	s.step(StepDirSynced)
	return nil
}

// Abort ends the fill without committing it. Readers get an error wrapping
// err (or ErrAborted if err is nil) once they have read what was written,
// unless the content was verified already: they then read it to the end.
// Abort after Commit, or a second Abort, does nothing.
func (f *Fill) Abort(err error) {
	if err == nil {
		err = ErrAborted
	} else if !errors.Is(err, ErrAborted) {
		err = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	f.mu.Lock()
	done := f.done
	f.mu.Unlock()
	if done {
		return
	}
	os.Remove(f.file.Name())
	s := f.store
	s.mu.Lock()
	if s.fills[f.digest] == f {
		delete(s.fills, f.digest)
		s.reserved -= f.reserved
	}
	s.mu.Unlock()
	f.finish(err)
}

// finish records the outcome, wakes readers and lets go of the file once
// no reader needs it.
func (f *Fill) finish(err error) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	f.done, f.err = true, err
	f.signalLocked()
	closeNow := len(f.readers) == 0
	f.mu.Unlock()
	if closeNow {
		f.file.Close()
	}
}

func (f *Fill) signalLocked() {
	close(f.wake)
	f.wake = make(chan struct{})
}

func (s *Store) step(st Step) {
	if s.hook != nil {
		s.hook(st)
	}
}
