package diskstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrLocked means another store (another process, or another Open in this
// one) has the directory open.
var ErrLocked = errors.New("diskstore: directory locked")

// lockName is the file, in the store's root, that the open store holds an
// exclusive flock on. The lock, not the file, is what counts: a lock file
// left by a crash does not keep the next start out, because the kernel
// drops the lock with the process.
const lockName = "lock"

// lockErrorKind sorts the errors of flock.
type lockErrorKind uint8

const (
	lockFailed        lockErrorKind = iota // anything else: the store does not open
	lockHeldElsewhere                      // another store holds the lock
	lockUnsupported                        // the filesystem has no flock
)

// lockErrorKindOf sorts err, an error of flock. Some filesystems (some
// FUSE ones, 9p, NFS without lockd) have no flock at all; a store on one
// runs unlocked rather than not at all, as it did before the lock.
func lockErrorKindOf(err error) lockErrorKind {
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EAGAIN):
		return lockHeldElsewhere
	case errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP),
		errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.ENOLCK):
		return lockUnsupported
	}
	return lockFailed
}

// withFlock replaces flock(2), for tests.
func withFlock(flock func(fd, how int) error) Option {
	return func(s *Store) { s.flock = flock }
}

// lockDir takes the exclusive lock of the store's directory. Two stores
// on one directory would remove each other's fills in progress (Open
// removes leftovers) and overrun each other's bounds. On a filesystem
// without flock it warns and returns the file unlocked.
func (s *Store) lockDir() (*os.File, error) {
	dir := s.root
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("diskstore: lock %s: %w", dir, err)
	}
	err = s.flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return f, nil
	case lockErrorKindOf(err) == lockUnsupported:
		s.log.Warn("the cache directory's filesystem has no flock; running without the lock that keeps a second nodecache out of it",
			"dir", dir, "error", err)
		return f, nil
	}
	f.Close()
	if lockErrorKindOf(err) == lockHeldElsewhere {
		return nil, fmt.Errorf("%w: another nodecache uses %s (it holds %s)", ErrLocked, dir, path)
	}
	return nil, fmt.Errorf("diskstore: lock %s: %w", dir, err)
}

// Close stops a background load, records a clean stop (so the next Open
// re-hashes nothing and loads in the background) and releases the
// store's directory, which another Open may then take.
// Fills still in progress should be ended first. Close does not wait for
// Run to return: cancel its context first.
func (s *Store) Close() error {
	s.mu.Lock()
	open := s.lock != nil
	s.mu.Unlock()
	if !open {
		return nil
	}
	s.loader.halt() // before the mark: it counts the bytes stored
	s.settleCommits()
	return errors.Join(s.leaveCleanMark(), s.unlock())
}

// unlock releases the directory's lock.
func (s *Store) unlock() error {
	s.mu.Lock()
	lock := s.lock
	s.lock = nil
	s.mu.Unlock()
	if lock == nil {
		return nil
	}
	return lock.Close()
}
