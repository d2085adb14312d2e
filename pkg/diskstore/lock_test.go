package diskstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
)

// TestSecondOpenOfADirFails: two stores on one directory would delete each
// other's temporary files and overrun each other's bounds, so the second
// Open fails, naming the directory, until the first is closed.
func TestSecondOpenOfADirFails(t *testing.T) {
	dir := t.TempDir()
	first := openStore(t, dir)
	_, err := Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("the error %q does not name %s", err, dir)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := openStore(t, dir)
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLockErrorKinds: flock failing because another process holds the lock
// keeps the store out; failing because the filesystem has no flock (some
// FUSE, 9p, NFS without lockd) does not; anything else is an error.
func TestLockErrorKinds(t *testing.T) {
	tests := []struct {
		err  error
		want lockErrorKind
	}{
		{syscall.EWOULDBLOCK, lockHeldElsewhere},
		{syscall.EAGAIN, lockHeldElsewhere},
		{syscall.ENOTSUP, lockUnsupported},
		{syscall.EOPNOTSUPP, lockUnsupported},
		{syscall.ENOSYS, lockUnsupported},
		{syscall.ENOLCK, lockUnsupported},
		{fmt.Errorf("flock: %w", syscall.ENOLCK), lockUnsupported},
		{syscall.EBADF, lockFailed},
		{syscall.EINTR, lockFailed},
		{syscall.EIO, lockFailed},
		{errors.New("something else"), lockFailed},
	}
	for _, tt := range tests {
		if got := lockErrorKindOf(tt.err); got != tt.want {
			t.Errorf("lockErrorKindOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestOpenWithoutFlock: on a filesystem without flock the store opens,
// unlocked, and says so once in its log; a real failure still stops it.
func TestOpenWithoutFlock(t *testing.T) {
	for _, tt := range []struct {
		errno  syscall.Errno
		opens  bool
		warned bool
	}{
		{syscall.ENOTSUP, true, true},
		{syscall.ENOSYS, true, true},
		{syscall.ENOLCK, true, true},
		{syscall.EIO, false, false},
	} {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			var logs bytes.Buffer
			fail := func(int, int) error { return tt.errno }
			s, err := Open(t.TempDir(), withFlock(fail), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if (err == nil) != tt.opens {
				t.Fatalf("Open = %v, want it to open: %t", err, tt.opens)
			}
			if err != nil && errors.Is(err, ErrLocked) {
				t.Fatalf("Open = %v: not ErrLocked", err)
			}
			if s != nil {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := strings.Count(logs.String(), "level=WARN"); (n == 1) != tt.warned || n > 1 {
				t.Errorf("%d warnings, want one: %t; log:\n%s", n, tt.warned, logs.String())
			}
		})
	}
}
