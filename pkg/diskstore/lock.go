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

// lockDir takes the exclusive lock of the store rooted at dir. Two stores
// on one directory would remove each other's fills in progress (Open
// removes leftovers) and overrun each other's bounds.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("diskstore: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another nodecache uses %s (it holds %s)", ErrLocked, dir, path)
		}
		return nil, fmt.Errorf("diskstore: lock %s: %w", dir, err)
	}
	return f, nil
}

// Close records a clean stop (so the next Open re-hashes nothing) and
// releases the store's directory, which another Open may then take.
// Fills still in progress should be ended first. Close does not wait for
// Run to return: cancel its context first.
func (s *Store) Close() error {
	s.mu.Lock()
	open := s.lock != nil
	s.mu.Unlock()
	if !open {
		return nil
	}
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
