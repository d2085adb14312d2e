package hostsdir

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"nodecache/internal/atomicfile"
)

// Write makes path, a hosts.toml, send pulls to mirror (scheme://host[:port])
// first, and reports what it did. A new file names server (the upstream
// endpoint; "" for _default, where containerd falls back to the registry
// pulled from). An existing file gets nodecache's host table merged in
// before its other hosts; with replace it is replaced instead, keeping a
// copy as path+BackupSuffix that Remove restores. A file that already
// sends pulls to mirror first is left as it is. Every write is atomic and
// durable.
func Write(path, server, mirror string, replace bool) (string, error) {
	fresh := Fresh(server, mirror)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		return "created", writeChecked(path, fresh, 0o644, mirror)
	case err != nil:
		return "", err
	}
	perm := filePerm(path)
	if !replace {
		// A file that already sends pulls to mirror first is left as it
		// is, with whatever comments or settings were added to its table.
		if Check(old, mirror) == nil {
			return "unchanged", nil
		}
		merged, err := Merge(old, mirror)
		if err != nil {
			return "", err
		}
		return "updated: nodecache's host put first, the others kept", replaceFile(path, merged, perm)
	}
	if bytes.Equal(fresh, old) {
		return "unchanged", nil
	}
	result := "replaced"
	if !bytes.HasPrefix(old, []byte(Marker)) {
		backup := path + BackupSuffix
		if _, err := os.Stat(backup); errors.Is(err, fs.ErrNotExist) {
			// The backup is what --remove restores, so it should not
			// carry nodecache's host from an earlier merge.
			original, err := Strip(old, mirror)
			if err != nil {
				original = old
			}
			if err := replaceFile(backup, original, perm); err != nil {
				return "", err
			}
			result = "replaced; the original is in " + backup
		}
	}
	return result, writeChecked(path, fresh, 0o644, mirror)
}

// Remove undoes Write for path and reports what it did: it restores the
// copy Write kept, deletes a file nodecache created (and its directory,
// if nothing else is in it), or takes nodecache's host out of a file it
// merged into.
func Remove(path, mirror string) (string, error) {
	backup := path + BackupSuffix
	if _, err := os.Stat(backup); err == nil {
		if err := os.Rename(backup, path); err != nil {
			return "", err
		}
		return "restored from " + backup, atomicfile.SyncDir(filepath.Dir(path))
	}
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "unchanged (absent)", nil
	}
	if err != nil {
		return "", err
	}
	rest, err := Strip(old, mirror)
	if err != nil {
		return "", err
	}
	if bytes.HasPrefix(old, []byte(Marker)) && !hasHostTables(rest) {
		if err := os.Remove(path); err != nil {
			return "", err
		}
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			return "", err
		}
		// Only succeeds if nothing else (certificates, say) is left.
		if os.Remove(filepath.Dir(path)) == nil {
			return "removed with its directory", nil
		}
		return "removed", nil
	}
	if bytes.Equal(rest, old) {
		return "unchanged", nil
	}
	return "nodecache's host taken out", replaceFile(path, rest, filePerm(path))
}

// writeChecked writes data to path after checking that containerd reads it
// with mirror as the first host.
func writeChecked(path string, data []byte, perm fs.FileMode, mirror string) error {
	if err := Check(data, mirror); err != nil {
		return err
	}
	return replaceFile(path, data, perm)
}

// replaceFile replaces path with data durably: a crash leaves the old
// file or the new one, and never a torn one.
func replaceFile(path string, data []byte, perm fs.FileMode) error {
	if err := atomicfile.Write("", path, data, perm); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// filePerm returns path's permission bits, or 0644 if it cannot be read.
func filePerm(path string) fs.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0o644
	}
	return fi.Mode().Perm()
}
