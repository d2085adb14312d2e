package diskstore

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// SweepInterval is how often Run applies idle expiry and re-checks free
// space. A minute keeps an idle TTL of hours or days precise enough and
// notices other users of the disk filling it within a minute.
const SweepInterval = time.Minute

// sweepBatch bounds how many entries one lock hold removes, so that a
// large expiry never stalls requests.
const sweepBatch = 1024

// victim is an entry taken out of the index whose files are still to be
// unlinked.
type victim struct {
	k    key
	d    digest.Digest
	size int64
	done chan struct{}
}

// takeLocked removes k (whose record is r) from the index and records that
// its files are about to be unlinked, so that a new fill of the same
// digest waits before putting its own files in place.
func (s *Store) takeLocked(k key, r record) victim {
	s.index.Remove(k)
	s.used -= r.size
	s.removals.Add(1)
	return s.unlinkingLocked(k, digestOf(k, r), r.size)
}

// unlinkingLocked records that the files of d (key k) are about to be
// unlinked, and returns the victim for removeVictims.
func (s *Store) unlinkingLocked(k key, d digest.Digest, size int64) victim {
	v := victim{k: k, d: d, size: size, done: make(chan struct{})}
	s.deleting[k] = v.done
	s.goneLocked(k)
	return v
}

// removeVictims unlinks the files of entries already taken out of the
// index. Open descriptors keep their bytes readable.
func (s *Store) removeVictims(victims []victim, why string) {
	for _, v := range victims {
		p := s.path(v.d)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove cache entry", "digest", v.d, "error", err)
		}
		os.Remove(p + typeSuffix)
		s.mu.Lock()
		delete(s.deleting, v.k)
		s.mu.Unlock()
		close(v.done)
		s.log.Debug("cache entry removed", "reason", why, "digest", v.d, "bytes", v.size)
	}
}

// waitDeleting blocks until a pending unlink of k, if any, is done.
func (s *Store) waitDeleting(k key) {
	s.mu.Lock()
	ch := s.deleting[k]
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// makeRoomLocked evicts least recently used entries until need more bytes
// fit within max-size and leave min-free bytes free. avail is the free
// space on the filesystem, or -1 if not known. It returns the evicted
// entries, whose files the caller unlinks after unlocking, and whether
// the bytes fit.
func (s *Store) makeRoomLocked(need, avail int64) ([]victim, bool) {
	if s.loading {
		// The index lacks the least recently used entries yet, and
		// used counts them: admit what fits, evict nothing.
		return nil, s.freeLocked(need, avail)
	}
	if avail >= 0 {
		avail += s.releasedBytesLocked() // on the disk and in s.reserved
	}
	maxSize := s.maxSize
	if maxSize <= 0 {
		maxSize = math.MaxInt64
	}
	// Evict nothing for a fill that could not fit even in a store holding
	// only its pinned entries: it will stream uncached, and the cache
	// should stay.
	cannot := func(pinned int64) bool {
		return pinned+s.reserved+need > maxSize || (s.minFree > 0 && avail >= 0 && avail+s.used-pinned-s.reserved-need < s.minFree)
	}
	if cannot(0) {
		return nil, false
	}
	var victims []victim
	var freed int64
	fits := func() bool {
		if s.used+s.reserved+need > maxSize {
			return false
		}
		return s.minFree <= 0 || avail < 0 || avail+freed-s.reserved-need >= s.minFree
	}
	// Pinned bytes cost a lookup per pin: asked only when a fill needs an
	// eviction. With need 0 (a sweep, a commit), every unpinned entry may
	// go to bring the store back within its bounds.
	if need > 0 && len(s.pins) > 0 && !fits() && cannot(s.pinnedBytesLocked()) {
		return nil, false
	}
	for !fits() {
		k, r, ok := s.oldestUnpinnedLocked()
		if !ok {
			return victims, false
		}
		freed += r.size
		s.counts.Evictions++
		victims = append(victims, s.takeLocked(k, r))
	}
	return victims, true
}

// Sweep removes entries idle for longer than the idle TTL, and evicts
// entries if the size bounds are exceeded (the disk filled up, or the
// bounds shrank). Entries are kept in recency order, so the cost is that
// of the entries removed, whatever the store's size. While the index
// loads it does nothing: the load sweeps when it ends.
func (s *Store) Sweep() {
	s.mu.Lock()
	loading := s.loading
	s.mu.Unlock()
	if loading {
		return // the load sweeps when it ends
	}
	expired := s.idle()
	for {
		s.mu.Lock()
		var victims []victim
		for len(victims) < sweepBatch {
			k, r, ok := s.oldestUnpinnedLocked()
			if !ok || !expired.Expired(time.Unix(r.used, 0)) {
				break
			}
			s.counts.Expirations++
			victims = append(victims, s.takeLocked(k, r))
		}
		s.mu.Unlock()
		s.removeVictims(victims, "expired")
		if len(victims) < sweepBatch {
			break
		}
	}
	avail := s.available()
	s.mu.Lock()
	victims, _ := s.makeRoomLocked(0, avail)
	s.mu.Unlock()
	s.removeVictims(victims, "evicted")
}

// Run sweeps every SweepInterval, and scrubs (see WithScrubInterval), until
// ctx is done.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	ticks := s.scrubTicks
	if ticks == nil && s.scrubInterval > 0 {
		st := time.NewTicker(scrubTick)
		defer st.Stop()
		ticks = st.C
	}
	var sc scrub
	defer sc.close()
	budget := s.scrubRate * int64(scrubTick) / int64(time.Second)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Sweep()
		case <-ticks:
			var n int64
			if s.scrubInterval > 0 {
				n = s.tickScrub(ctx, &sc, budget)
			}
			if s.scrubTicked != nil {
				s.scrubTicked(n)
			}
		}
	}
}

// available returns the free bytes on the store's filesystem, or -1 when
// no min-free bound is set (no need to ask) or the filesystem cannot say.
func (s *Store) available() int64 {
	if s.minFree <= 0 {
		return -1
	}
	_, avail, err := Capacity(s.root)
	if err != nil {
		return -1
	}
	return avail
}

// roomOnDisk reports whether the filesystem has room for size more bytes
// (the expected size, or a minimal guess if unknown) beyond min-free. It is
// asked only after a write failed for lack of space, so that the requests
// that follow stream uncached instead of failing the same way.
func (s *Store) roomOnDisk(size int64) bool {
	_, avail, err := Capacity(s.root)
	return err == nil && avail >= max(size, 1<<20)+s.minFree
}

// Capacity returns the total and available bytes of the filesystem that
// holds dir, as an unprivileged user sees them.
func Capacity(dir string) (total, avail int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, nil
}

// diskErrorLog logs a disk error once when the store starts failing, not
// once per request, and once more when it recovers.
type diskErrorLog struct {
	failing atomic.Bool
}

func (l *diskErrorLog) fail(log *slog.Logger, err error) {
	if l.failing.CompareAndSwap(false, true) {
		log.Error("cache store cannot write; streaming uncached until it can", "error", err)
	}
}

func (l *diskErrorLog) ok(log *slog.Logger) {
	if l.failing.CompareAndSwap(true, false) {
		log.Info("cache store writes again")
	}
}
