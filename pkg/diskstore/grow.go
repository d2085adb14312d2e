package diskstore

import "fmt"

// growStep is how much more room a fill of unknown size reserves each time
// it outgrows what it holds, when that room is free: one lock hold and one
// statfs per 4 MiB written keeps the cost of bounding it negligible, and
// room reserved but not yet written is never more than this.
const growStep = 4 << 20

// grow reserves room for f, a fill of unknown size with written bytes, to
// hold need bytes. It takes growStep bytes if they are free; else just
// what need requires, evicting least recently used entries for it as
// Begin does for a known size (a step's worth of eviction could be for
// bytes that never come). It fails with ErrTooLarge past the maximum size, with
// ErrNoSpace when fills in progress hold the rest of the bound or min-free
// would break, and with ErrAborted if f has ended meanwhile.
func (f *Fill) grow(written, need int64) error {
	s := f.store
	s.mu.Lock()
	have := f.reserved
	s.mu.Unlock()
	if need <= have {
		return nil
	}
	if s.maxSize > 0 && need > s.maxSize {
		return fmt.Errorf("%w: %s has grown past %d bytes", ErrTooLarge, f.digest, s.maxSize)
	}
	want := max(need-have, growStep)
	if s.maxSize > 0 {
		want = min(want, s.maxSize-have)
	}
	fits, settle, err := f.reserve(written, need, have, want)
	if err == nil && settle {
		// Deferred commits hold the room: commit them, so that their
		// entries can be evicted, and try once more.
		s.settleCommits()
		fits, _, err = f.reserve(written, need, have, want)
	}
	if err != nil {
		return err
	}
	if !fits {
		return fmt.Errorf("%w: %s has grown to %d bytes and the bounds leave no more", ErrNoSpace, f.digest, written)
	}
	return nil
}

// freeLocked reports whether need more bytes fit within the bounds without
// evicting anything; avail is as for makeRoomLocked.
func (s *Store) freeLocked(need, avail int64) bool {
	if s.maxSize > 0 && s.used+s.reserved+need > s.maxSize {
		return false
	}
	if s.minFree <= 0 || avail < 0 {
		return true
	}
	return avail+s.releasedBytesLocked()-s.reserved-need >= s.minFree // those bytes are on the disk and in s.reserved
}

// reserve is one attempt of grow to reserve want bytes, or need-have with
// evictions. settle reports that it did not fit while deferred commits
// hold room.
func (f *Fill) reserve(written, need, have, want int64) (fits, settle bool, err error) {
	s := f.store
	avail := s.available()
	if avail >= 0 {
		avail += written // already on the disk, and already in f.reserved
	}
	s.mu.Lock()
	if s.fills[f.digest] != f {
		s.mu.Unlock()
		return false, false, ErrAborted
	}
	var victims []victim
	fits = s.freeLocked(want, avail)
	if !fits {
		want = need - have
		victims, fits = s.makeRoomLocked(want, avail)
	}
	if fits {
		f.reserved += want
		s.reserved += want
	}
	settle = !fits && s.anyCommittingLocked()
	s.mu.Unlock()
	s.removeVictims(victims, "evicted")
	return fits, settle, nil
}
