package diskstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"nodecache/internal/atomicfile"
)

// writeFileAtomic writes data to a temporary file in tmpDir, fsyncs it and
// renames it to path; the commit that follows syncs path's directory.
// tmpDir must be on the same filesystem as path.
func writeFileAtomic(tmpDir, path string, data []byte) error {
	if err := atomicfile.Write(tmpDir, path, data, 0o600); err != nil {
		return fmt.Errorf("diskstore: write %s: %w", path, err)
	}
	return nil
}

// ensureDir creates dir if needed, and then fsyncs its parent so the new
// directory entry survives a crash.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("diskstore: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("diskstore: sync %s: %w", dir, err)
	}
	return nil
}
