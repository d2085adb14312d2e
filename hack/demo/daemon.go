package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"nodecache/internal/daemontest"
)

// startNodecache runs `bin serve` with its store under dir, mirroring the
// registry at upstreamURL (http://host:port) under the name upstreamHost,
// and waits until /readyz answers. Stop it with its Stop method; Tail
// gives the end of its log for error messages.
func startNodecache(ctx context.Context, bin, dir, upstreamHost, upstreamURL string) (*daemontest.Process, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("nodecache binary: %w (make demo builds it with make build)", err)
	}
	return daemontest.Start(ctx, bin,
		"--data-dir", filepath.Join(dir, "data"),
		"--registry", upstreamHost+"="+upstreamURL,
		// Every pull asks upstream for the tag, so the third pull shows
		// the last known answer served while upstream is down.
		"--tag-ttl", "0",
		"--shutdown-grace", "2s",
	)
}
