package diskstore

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

// cleanName is the file Close leaves in the store's root and Open
// removes: its absence at Open means the last store on the directory
// never closed (the process crashed, was killed, or the power went).
const cleanName = "clean"

// crashWindow is how far back from the newest entry Open re-hashes
// entries after a crash. A commit fsyncs before it renames, so a
// committed entry is whole unless the disk lost writes it had
// acknowledged, and those are the last ones before the crash. A minute
// is also the resolution of an entry's mtime as its last use
// (touchInterval). Since a serve updates the mtime too, the window takes
// in every entry written or served in the last minute, not only the
// writes: the work is bounded by what one minute of fills and hits
// touched.
const crashWindow = time.Minute

// takeCleanMark removes the clean mark and reports whether it was there.
// From here on a crash leaves no mark, until Close.
func (s *Store) takeCleanMark() bool {
	if err := os.Remove(filepath.Join(s.root, cleanName)); err != nil {
		return false
	}
	_ = syncDir(s.root) // at worst the next start re-hashes for nothing
	return true
}

// leaveCleanMark records a clean stop for the next Open.
func (s *Store) leaveCleanMark() error {
	if err := s.inTmp(func() error {
		return writeFileAtomic(s.tmpDir(), filepath.Join(s.root, cleanName), nil)
	}); err != nil {
		return err
	}
	return syncDir(s.root)
}

// verifyRecent re-hashes, after a crash, the entries whose mtime is
// within crashWindow of the newest one's, and removes those that do not
// match their digest.
//
// It runs inside Open, before anything can be served, rather than in the
// background after: an entry found bad then was never served, and the
// work is bounded by what one minute of fills and hits touched (the mtime
// is the last use as well as the write). A daemon that is
// not listening yet costs its clients little, as containerd pulls from
// the registry itself when its mirror does not answer.
func (s *Store) verifyRecent() {
	recent := s.recentEntries()
	if len(recent) == 0 {
		return
	}
	start := s.now()
	var bytes int64
	for _, d := range recent {
		n, err := verifyFile(s.path(d), d)
		bytes += n
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.removeCorrupt(d, nil, err)
		}
	}
	s.log.Info("re-verified the entries written or used just before an unclean stop",
		"entries", len(recent), "bytes", bytes, "took", s.now().Sub(start))
}

// recentEntries returns the entries used within crashWindow of the most
// recently used one, newest first.
func (s *Store) recentEntries() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.index
	if l.head == none {
		return nil
	}
	since := l.slots[l.head].used - int64(crashWindow/time.Second)
	var recent []digest.Digest
	for i := l.head; i != none && l.slots[i].used >= since; i = l.slots[i].next {
		recent = append(recent, digestOf(l.slots[i].key, l.record(i)))
	}
	return recent
}
