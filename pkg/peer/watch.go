package peer

import (
	"context"
	"log/slog"

	"nodecache/internal/dirwatch"
)

// watchFile calls reload once the watch is in place and then after every
// burst of changes in the directory that holds path, until ctx ends (see
// internal/dirwatch for why the directory and not the file). Reloads are
// cheap and callers ignore ones that change nothing.
func watchFile(ctx context.Context, log *slog.Logger, path string, reload func()) error {
	return dirwatch.Run(ctx, []string{path}, func(dirwatch.Reason) { reload() },
		dirwatch.WithLogger(log.With(slog.String("file", path))))
}
