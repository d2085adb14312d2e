package diskstore

import (
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Loading the index in the background.
//
// After a clean stop every file under blobs/ is a committed entry (no
// fill was cut short, no write lost) and the clean mark records the bytes
// they hold, so Open need not read them all before the store serves: it
// starts the load and returns. Until the load ends:
//
//   - A lookup the index cannot answer reads d's file itself (lockIndexed):
//     a regular file with d's name is an entry, with the media type of its
//     type file if it has one, as the load reads it. A file a removal has
//     taken during the load (gone), or one a fill of d in progress is
//     putting in place, is not an answer: a miss is.
//   - Removals record their key in gone, and the load adds none of them
//     back. The load adds no entry the index already holds either: those
//     were used or committed during the load, and they keep their record
//     and their place at the hot end of the order.
//   - used starts from the clean mark's bytes: it counts the entries the
//     index does not hold yet, so a fill is admitted against the bound as
//     if the whole store were loaded. Nothing is evicted, since what the
//     index lacks is the least recently used part of the store; a fill
//     that does not fit streams uncached. The load ends with a sweep.
//
// After a crash the load stays in Open: the re-hash of the last minute's
// entries (verifyRecent) must come before anything is served, and it
// needs the whole index to find them.

// loadStep names a point of the background load, for tests.
type loadStep uint8

const (
	loadStarting loadStep = iota // before the first shard is read
	loadScanned                  // every shard read, before the merge into the index
)

// withLoadHook calls hook at each step of a background load. For tests.
func withLoadHook(hook func(loadStep)) Option { return func(s *Store) { s.loadHook = hook } }

// loader is the state of the index load.
type loader struct {
	done     chan struct{} // closed when the load has ended, whole or failed
	err      error         // why it failed; guarded by Store.mu
	stop     chan struct{} // closed by Close
	stopOnce sync.Once
	exited   chan struct{} // closed when the background load has returned; nil without one
}

func (l *loader) init() {
	l.done, l.stop = make(chan struct{}), make(chan struct{})
}

// halt stops a background load and waits until it has returned.
func (l *loader) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	if l.exited != nil {
		<-l.exited
	}
}

func (l *loader) stopped() bool { return closed(l.stop) }

// Loaded is closed once the index holds every entry on disk: when Open
// returns, after a crash or the first start of a version that did not
// count the bytes at Close; a moment later after a clean stop, as the
// load runs in the background. Until then Len, Stats' Entries, PinStats
// and Manifests answer for part of the store, while lookups (Stat, Open,
// Lookup, Touch, Peek) and removals answer for all of it. It is closed
// too if the load fails (LoadErr), and never if the store is closed
// before the load ends.
func (s *Store) Loaded() <-chan struct{} { return s.loader.done }

// LoadErr returns why the background load failed, or nil. The store
// serves on from what it found, evicting nothing.
func (s *Store) LoadErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loader.err
}

func (s *Store) finishLoad(err error) {
	s.mu.Lock()
	s.loader.err = err
	s.mu.Unlock()
	close(s.loader.done)
}

func (s *Store) loadStep(st loadStep) {
	if s.loadHook != nil {
		s.loadHook(st)
	}
}

// loadInBackground starts the load of the index, stored bytes on disk.
func (s *Store) loadInBackground(stored int64) {
	s.mu.Lock()
	s.loading, s.used, s.gone = true, stored, make(map[key]struct{})
	s.mu.Unlock()
	s.loader.exited = make(chan struct{})
	endGC := lowerGCForLoad()
	go func() {
		defer close(s.loader.exited)
		defer endGC()
		s.loadStep(loadStarting)
		acc, err := s.scan(s.loader.stop, true)
		if s.loader.stopped() {
			return // closed: the next Open loads
		}
		if err != nil {
			s.finishLoad(err)
			return
		}
		s.loadStep(loadScanned)
		s.merge(acc)
		s.loaded()
	}()
}

// mergeRoom is the room made, before the merge takes the lock, for the
// entries the index gained during the load beyond those it held when
// asked: a few seconds of fills and hits rarely exceed it, and past it
// the merge only grows the slice under the lock. A load during which
// nothing was indexed makes none: growing the slice may copy it, tens
// of megabytes for a large store.
const mergeRoom = 4096

// merge builds the index of the entries the load found, outside the lock,
// and puts it in place: without the entries removed during the load or
// being committed by a fill, and under the ones indexed during the load,
// which keep their records and their order at the hot end. used becomes
// the bytes the index holds.
func (s *Store) merge(acc *loadAcc) {
	s.mu.Lock()
	during := s.index.Len()
	s.mu.Unlock()
	if during > 0 {
		acc.slots = slices.Grow(acc.slots, during+mergeRoom)
	}
	idx := newLRU()
	idx.load(acc.slots, acc.tails)
	var bytes int64
	for i := range idx.slots {
		bytes += idx.slots[i].size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	drop := func(k key) {
		if r, ok := idx.Peek(k); ok {
			idx.Remove(k)
			bytes -= r.size
		}
	}
	for k := range s.gone {
		drop(k)
	}
	// A fill whose commit is under way may have its file in place, read
	// by the load: the commit indexes it (with its media type, which the
	// load may have missed), drops it (Fill.dropped) or takes it away
	// (a failed commit). Until then it is the fill's, not an entry.
	for _, f := range s.fills {
		drop(f.key)
	}
	old := s.index
	for i := old.tail; i != none; i = old.slots[i].prev {
		k, r := old.slots[i].key, old.record(i)
		drop(k)
		idx.Add(k, r)
		bytes += r.size
	}
	s.index, s.used, s.loading, s.gone = idx, bytes, false, nil
}

// goneLocked records, during a background load, that k has been removed.
func (s *Store) goneLocked(k key) {
	if s.loading {
		s.gone[k] = struct{}{}
	}
}

// lockIndexed locks s.mu and returns k's record, with s.mu held. While
// the index loads, an entry it does not hold yet is read from d's file
// (see the top of this file) and, if insert, added to the index at the
// hot end: the callers that insert use the entry or remove it at once.
// used counts it already.
func (s *Store) lockIndexed(k key, tail *[32]byte, d digest.Digest, insert bool) (record, bool) {
	s.mu.Lock()
	r, ok := s.index.Peek(k)
	if ok || !s.loading {
		return r, ok
	}
	s.mu.Unlock()
	e, found := statEntry(s.path(d)) // a few system calls: not under the lock
	s.mu.Lock()
	if r, ok := s.index.Peek(k); ok || !s.loading {
		return r, ok // indexed meanwhile, or the load has ended: the index answers
	}
	if _, removed := s.gone[k]; !found || removed || s.fills[d] != nil {
		return record{}, false
	}
	r = record{size: e.size, used: e.used, tail: tail, public: e.public, mediaType: s.mediaTypeIndexLocked(e.mediaType)}
	if insert {
		s.index.Add(k, r)
	}
	return r, true
}

// diskEntry is an entry read from its files.
type diskEntry struct {
	size, used int64 // used: the mtime, in Unix seconds
	public     bool
	mediaType  string
}

// statEntry reads the entry whose content file is path, by the load's
// rules: a regular file (not followed if a symlink), its mtime the last
// use, its mode public or not, and its media type from its type file.
func statEntry(path string) (diskEntry, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return diskEntry{}, false
	}
	e := diskEntry{size: st.Size, used: st.Mtim.Sec, public: st.Mode&0o004 != 0}
	e.mediaType, _ = readMediaType(path + typeSuffix)
	return e, true
}

// readMediaType reads a media type file, not following a symlink. A
// missing or unreadable one means no media type, as for the load.
func readMediaType(path string) (string, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", errors.Is(err, os.ErrNotExist)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", false
	}
	return string(b), true
}
