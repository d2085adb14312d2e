package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nodecache/internal/daemontest"
)

// testTimeout bounds a whole demo run in tests, so that a hang fails with
// a message instead of at the test binary's timeout.
const testTimeout = 30 * time.Second

// TestMain removes, at the end, the daemon daemontest.Binary built.
func TestMain(m *testing.M) { daemontest.Main(m) }

// TestDemo runs the demo against a nodecache built from this module, with
// a small image, and checks what `make demo` shows: the warm pull costs
// the upstream no blob bytes and the image still pulls with the upstream
// down.
func TestDemo(t *testing.T) {
	bin := daemontest.BinaryOrSkip(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var out bytes.Buffer
	rep, err := demo(ctx, t, options{
		nodecache:  bin,
		rate:       100 << 20,
		layerSizes: []int64{256 << 10, 1 << 20},
		out:        &out,
	})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.cold.upstreamBlobBytes == 0 {
		t.Error("pull 1: the upstream sent no blob bytes; the cold pull did not go upstream")
	}
	if rep.warm.upstreamBlobBytes != 0 {
		t.Errorf("pull 2: the upstream sent %d blob bytes, want 0", rep.warm.upstreamBlobBytes)
	}
	// index + 2 × (manifest + config + 2 layers)
	if rep.offline.objects != 9 || rep.offline.bytes != rep.cold.bytes {
		t.Errorf("pull 3 (upstream down): %d objects, %d bytes; want 9 objects, %d bytes",
			rep.offline.objects, rep.offline.bytes, rep.cold.bytes)
	}
	if !strings.Contains(out.String(), "pull 3 (upstream down, cache hit)") {
		t.Error("the output does not report pull 3 as a cache hit")
	}
}

// TestDemoFailsClearly checks that the demo stops with a message saying
// what went wrong when nodecache cannot run.
func TestDemoFailsClearly(t *testing.T) {
	crashing := filepath.Join(t.TempDir(), "nodecache")
	if err := os.WriteFile(crashing, []byte("#!/bin/sh\necho 'nodecache: --data-dir: broken' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, bin string
		want      []string
	}{
		{"missing binary", filepath.Join(t.TempDir(), "absent"), []string{"no such file", "make build"}},
		{"binary exits", crashing, []string{"did not become ready", "exit status 2", "--data-dir: broken"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			var out bytes.Buffer
			_, err := demo(ctx, t, options{nodecache: tc.bin, layerSizes: []int64{1 << 10}, out: &out})
			if err == nil {
				t.Fatalf("demo succeeded with %s", tc.bin)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
