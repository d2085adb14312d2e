package diskstore

import (
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// Touch records a use of d's committed entry without opening its file,
// and returns the entry; Open is Touch and the open. It is for a caller
// that keeps d's bytes in memory: the store's index stays the one truth
// of what may be served (an entry evicted, expired or deleted answers
// ErrNotFound, and the copy in memory must go too), and eviction and the
// idle TTL see every use. Only the index is read (and, while it loads,
// d's file, if the index does not hold d yet); the file's times are
// updated at most once per touchInterval.
func (s *Store) Touch(d digest.Digest) (Info, error) {
	k, tail, err := keyOf(d)
	if err != nil {
		return Info{}, ErrNotFound
	}
	now := s.now()
	r, ok := s.lockIndexed(k, tail, d, true)
	if !ok {
		s.mu.Unlock()
		return Info{}, ErrNotFound
	}
	if s.expiredLocked(k, r) {
		s.counts.Expirations++
		v := s.takeLocked(k, r)
		s.mu.Unlock()
		s.removeVictims([]victim{v}, "expired")
		return Info{}, ErrNotFound
	}
	touch := now.Unix()-r.used >= int64(touchInterval/time.Second)
	r.used = now.Unix()
	s.index.Add(k, r)
	info := s.infoLocked(k, r)
	s.mu.Unlock()
	if touch {
		// Persist recency for the next start; failure costs only that.
		_ = os.Chtimes(s.path(d), now, now)
	}
	return info, nil
}

// Removals counts the entries taken out of the index since Open, for
// any reason (evicted, expired, deleted, found corrupt or missing). A
// caller that checked an entry with Touch may rely on that answer while
// Removals has not changed: no entry has left the store since. It takes
// no lock.
func (s *Store) Removals() uint64 { return s.removals.Load() }

// RemoveCorrupt removes d's entry, whose file f a reader found not to
// match d, and counts it as the scrub counts what it finds: a reader
// that has just hashed the bytes need not leave them to be served until
// the next scrub pass. If d's file is another one by now (d was removed
// and filled again), it is left alone.
func (s *Store) RemoveCorrupt(d digest.Digest, f *os.File) {
	fi, err := f.Stat()
	if err != nil {
		return // the scrub judges it in its turn
	}
	s.removeCorrupt(d, fi, ErrDigestMismatch)
}
