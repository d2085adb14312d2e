package main

import (
	"context"
	"log/slog"
	"os"

	"nodecache/pkg/daemon"
)

func newLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, cfg Config) error {
	cfg.Version = version
	d, err := daemon.New(cfg.Config, newLogger(cfg))
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
