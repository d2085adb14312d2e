package diskstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/atomicfile"
)

// Pins are digests the size bounds and the idle TTL never remove: the
// content a node must keep whatever else it pulls. A pinned digest need
// not be stored yet; it is kept from the moment it is committed. Only the
// scrub removes a pinned entry, when its bytes no longer match.
//
// The set is replaced whole (SetPins) by its one owner, which knows which
// image holds which digest, rather than counted up and down here: a
// replace cannot drift out of balance across restarts. It is persisted in
// the file pinsFile, replaced atomically, and loaded by Open before its
// first sweep, so that a restart never evicts pinned content in the
// window before the owner applies its pins again.

// pinsFile holds the pinned digests, one per line, under the root.
const pinsFile = "pins"

// PinStats describes the pinned set.
type PinStats struct {
	Digests int   // pinned digests, stored or not
	Entries int   // pinned digests the store holds
	Bytes   int64 // bytes of the pinned entries the store holds
}

// SetPins replaces the pinned set with ds and persists it, before it
// returns, in a file that survives a crash whole or not at all. Calls
// are serialised; the last one wins.
func (s *Store) SetPins(ds []digest.Digest) error {
	pins := make(map[key]digest.Digest, len(ds))
	var buf bytes.Buffer
	for _, d := range ds {
		k, _, err := keyOf(d)
		if err != nil {
			return fmt.Errorf("diskstore: pin %q: %w", d, err)
		}
		if _, dup := pins[k]; !dup {
			pins[k] = d
			buf.WriteString(d.String())
			buf.WriteByte('\n')
		}
	}
	// pinWrite orders the file's writes as the set's, and is never held
	// with mu.
	s.pinWrite.Lock()
	defer s.pinWrite.Unlock()
	if err := s.inTmp(func() error {
		return atomicfile.Write(s.tmpDir(), filepath.Join(s.root, pinsFile), buf.Bytes(), 0o644)
	}); err != nil {
		return fmt.Errorf("diskstore: save pins: %w", err)
	}
	if err := atomicfile.SyncDir(s.root); err != nil {
		return fmt.Errorf("diskstore: save pins: %w", err)
	}
	s.mu.Lock()
	s.pins = pins
	s.mu.Unlock()
	return nil
}

// Pins returns the pinned digests, sorted.
func (s *Store) Pins() []digest.Digest {
	s.mu.Lock()
	out := make([]digest.Digest, 0, len(s.pins))
	for _, d := range s.pins {
		out = append(out, d)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Pinned reports whether d is pinned.
func (s *Store) Pinned(d digest.Digest) bool {
	k, _, err := keyOf(d)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pins[k]
	return ok
}

// DeleteUnpinned removes d as Delete does, unless d is pinned, and
// returns what it removed. The pin is checked under the lock that takes
// the entry out of the index, so a SetPins that pins d cannot land
// between the check and the removal: pinned content is never deleted by
// an operator's evict racing the pin manager. It answers ErrPinned for a
// pinned d, and ErrNotFound for one not stored. Like Delete, it removes
// a verified fill of d whose commit is still under way after
// settleTimeout once the commit lands.
func (s *Store) DeleteUnpinned(d digest.Digest) (Info, error) {
	k, tail, err := keyOf(d)
	if err != nil {
		return Info{}, err
	}
	s.settle(d)
	r, ok := s.lockIndexed(k, tail, d, true)
	if _, pinned := s.pins[k]; pinned {
		s.mu.Unlock()
		return Info{}, ErrPinned
	}
	if !ok {
		f := s.dropCommittingLocked(d)
		s.mu.Unlock()
		if f == nil {
			return Info{}, ErrNotFound
		}
		return Info{Digest: d, Size: f.releasedSize, MediaType: f.meta.MediaType,
			Public: f.public.Load(), Accessed: s.now()}, nil
	}
	info := s.infoLocked(k, r)
	v := s.takeLocked(k, r)
	s.mu.Unlock()
	s.removeVictims([]victim{v}, "deleted")
	return info, nil
}

// PinStats returns the size of the pinned set. While the index loads
// (Loaded), it counts the pinned entries read so far.
func (s *Store) PinStats() PinStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := PinStats{Digests: len(s.pins)}
	for k := range s.pins {
		if r, ok := s.index.Peek(k); ok {
			st.Entries++
			st.Bytes += r.size
		}
	}
	return st
}

// pinnedBytesLocked is the bytes of stored pinned entries: bytes no
// eviction can free. It costs a map lookup per pin, and is asked only
// when a fill needs room.
func (s *Store) pinnedBytesLocked() int64 {
	var n int64
	for k := range s.pins {
		if r, ok := s.index.Peek(k); ok {
			n += r.size
		}
	}
	return n
}

// expiredLocked reports whether the entry k, whose record is r, has been
// idle past the TTL and may be removed for it: never if it is pinned.
func (s *Store) expiredLocked(k key, r record) bool {
	if _, ok := s.pins[k]; ok {
		return false
	}
	return s.idle().Expired(time.Unix(r.used, 0))
}

// oldestUnpinnedLocked returns the least recently used entry that is not
// pinned. Pinned entries it passes go to the front of the order, keeping
// their time of last use, so that the next call does not pass them again:
// the cost stays that of the entries evicted. It reports false if every
// entry is pinned.
func (s *Store) oldestUnpinnedLocked() (key, record, bool) {
	for range s.index.Len() {
		k, r, ok := s.index.GetOldest()
		if !ok {
			break
		}
		if _, pinned := s.pins[k]; !pinned {
			return k, r, true
		}
		s.index.Add(k, r)
	}
	return key{}, record{}, false
}

// loadPins reads the pinned set saved by the last SetPins. A missing file
// is an empty set; a line that is not a digest is skipped with a warning,
// since losing one pin is better than refusing to start.
func (s *Store) loadPins() error {
	data, err := os.ReadFile(filepath.Join(s.root, pinsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("diskstore: load pins: %w", err)
	}
	pins := make(map[key]digest.Digest)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := string(bytes.TrimSpace(sc.Bytes()))
		if line == "" {
			continue
		}
		k, _, err := keyOf(digest.Digest(line))
		if err != nil {
			s.log.Warn("skipping a pin that is not a digest", "file", pinsFile, "line", line)
			continue
		}
		pins[k] = digest.Digest(line)
	}
	s.mu.Lock()
	s.pins = pins
	s.mu.Unlock()
	return nil
}
