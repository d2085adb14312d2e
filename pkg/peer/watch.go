package peer

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// watchFile calls reload once the watch is in place and then after every
// change in the directory that holds path, until ctx ends.
//
// It watches the directory, not the file: a file replaced by rename (how
// editors and config tools write) is a new inode that a watch on the old
// one never reports, and a Kubernetes ConfigMap or Secret volume swaps a
// "..data" symlink next to the file rather than touching the file at all.
// Every event in the directory triggers a reload; reloads are cheap and
// callers ignore ones that change nothing.
func watchFile(ctx context.Context, log *slog.Logger, path string, reload func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	// A change between the caller's first load and the watch starting would
	// otherwise go unseen until the next one.
	reload()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			reload()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflowed event queue loses events, not the watch:
			// reloading covers whatever was lost.
			log.Warn("file watch error", slog.String("file", path), slog.Any("error", err))
			reload()
		}
	}
}
