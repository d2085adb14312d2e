// Package atomicfile replaces files so that a crash leaves either the old
// content or the new, never a mix: write a temporary file, fsync it,
// rename it into place, and fsync the directory to make the rename
// durable.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, with permissions perm. The temporary
// file is made in tmpDir, which must be on path's filesystem (the
// directory of path if tmpDir is ""). It does not fsync path's directory:
// callers that rename more into it sync it once with SyncDir.
func Write(tmpDir, path string, data []byte, perm os.FileMode) error {
	if tmpDir == "" {
		tmpDir = filepath.Dir(path)
	}
	f, err := os.CreateTemp(tmpDir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// SyncDir fsyncs a directory, so the entries renamed or created in it
// survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
