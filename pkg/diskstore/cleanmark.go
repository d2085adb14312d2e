package diskstore

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// cleanName is the file Close leaves in the store's root and Open
// removes: its absence at Open means the last store on the directory
// never closed (the process crashed, was killed, or the power went). It
// holds the bytes of the entries stored, in decimal, which a background
// load counts against the bound until it has read them all; a mark
// without them (left by an older version) is a clean stop whose store
// is loaded before Open returns.
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

// takeCleanMark removes the clean mark and reports whether it was there
// and, if it says, how many bytes the store holds. From here on a crash
// leaves no mark, until Close.
func (s *Store) takeCleanMark() (clean bool, stored int64, counted bool) {
	path := filepath.Join(s.root, cleanName)
	b, rerr := os.ReadFile(path)
	if err := os.Remove(path); err != nil {
		return false, 0, false
	}
	_ = syncDir(s.root) // at worst the next start re-hashes for nothing
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if rerr != nil || err != nil || n < 0 {
		return true, 0, false
	}
	return true, n, true
}

// leaveCleanMark records a clean stop, and the bytes stored, for the next
// Open. A store closed while it loads counts, for the entries it had not
// read, the bytes its own mark gave.
func (s *Store) leaveCleanMark() error {
	s.mu.Lock()
	stored := max(s.used, 0)
	s.mu.Unlock()
	if err := s.inTmp(func() error {
		return writeFileAtomic(s.tmpDir(), filepath.Join(s.root, cleanName), []byte(strconv.FormatInt(stored, 10)+"\n"))
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
