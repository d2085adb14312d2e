//go:build linux && (amd64 || arm64)

package diskstore

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// lstatAt is fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) for a name read
// from the directory: the NUL byte that getdents wrote after it, just past
// len(name), ends it for the kernel, so no copy of the name is made (as
// unix.Fstatat makes two, which cost the load two allocations per entry).
// A name without its NUL byte goes through unix.Fstatat.
func lstatAt(fd int, name []byte, st *unix.Stat_t) error {
	if len(name) == 0 || cap(name) <= len(name) || name[:len(name)+1][len(name)] != 0 {
		return unix.Fstatat(fd, string(name), st, unix.AT_SYMLINK_NOFOLLOW)
	}
	_, _, errno := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(fd), uintptr(unsafe.Pointer(&name[0])),
		uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
