//go:build !linux || !(amd64 || arm64)

package diskstore

import "golang.org/x/sys/unix"

// lstatAt is fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW); see
// fstatat_fast.go for the architectures where it makes no copy of name.
func lstatAt(fd int, name []byte, st *unix.Stat_t) error {
	return unix.Fstatat(fd, string(name), st, unix.AT_SYMLINK_NOFOLLOW)
}
