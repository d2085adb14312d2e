package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"nodecache/pkg/daemon"
)

func newLogger(cfg Config, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(daemon.NewTextHandler(out, opts)) // slog's text, formatted faster
}

// run serves until ctx is done, then shuts down gracefully. The log goes
// to stderr through a daemon.LogWriter, so that no request waits for
// stderr; what it holds is written before run returns.
func run(ctx context.Context, cfg Config) error {
	cfg.Version = version
	lw := daemon.NewLogWriter(os.Stderr, 0)
	defer lw.Close()
	d, err := daemon.New(cfg.Config, newLogger(cfg, lw))
	if err != nil {
		return err
	}
	if err := d.CountLogDrops(lw); err != nil {
		return err
	}
	return d.Run(ctx)
}
