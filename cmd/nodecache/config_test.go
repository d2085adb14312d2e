package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
)

func TestParseServe(t *testing.T) {
	t.Setenv("NODECACHE_TAG_TTL", "5s")
	t.Setenv("NODECACHE_LISTEN", "127.0.0.1:1,unix:///run/a.sock")
	t.Setenv("NODECACHE_LOG_LEVEL", "debug")
	cfg, err := parseServe([]string{
		"--log-level", "warn", // a flag wins over the environment
		"--registry", "localhost:5000=http://127.0.0.1:5000",
		"--allow-registry", "ghcr.io",
		"--max-size", "15%",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TagTTL != 5*time.Second {
		t.Errorf("TagTTL = %v, want 5s from the environment", cfg.TagTTL)
	}
	if strings.Join(cfg.Listen, " ") != "127.0.0.1:1 unix:///run/a.sock" {
		t.Errorf("Listen = %v", cfg.Listen)
	}
	if cfg.LogLevel.String() != "WARN" {
		t.Errorf("LogLevel = %v, want the flag's WARN", cfg.LogLevel)
	}
	if got := strings.Join(cfg.AllowRegistries, ","); got != "docker.io,ghcr.io,localhost:5000" {
		t.Errorf("AllowRegistries = %s: want the given list plus --registry and --default-registry names", got)
	}
	if maxSize, minFree := cfg.StoreBounds(1000); maxSize != 150 || minFree != 100 {
		t.Errorf("bounds of a 1000-byte filesystem = %d, %d; want 150, 100", maxSize, minFree)
	}
	if cfg.TTL != 168*time.Hour {
		t.Errorf("TTL = %v, want the 168h default", cfg.TTL)
	}
	if cfg.ScrubInterval != 24*time.Hour {
		t.Errorf("ScrubInterval = %v, want the 24h default", cfg.ScrubInterval)
	}
}

func TestDefaultMaxSizeIsTheSmaller(t *testing.T) {
	cfg, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.StoreBounds(1 << 40); got != 20<<30 {
		t.Errorf("on 1 TiB: max size %d, want 20 GiB", got)
	}
	if got, _ := cfg.StoreBounds(100 << 30); got != 15<<30 {
		t.Errorf("on 100 GiB: max size %d, want 15 GiB", got)
	}
}

func TestBadSettingsNameTheFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nowhere"}, "--listen"},
		{[]string{"--listen", "unix://relative.sock"}, "--listen"},
		{[]string{"--registry", "x"}, "--registry"},
		{[]string{"--registry", "x=ftp://y"}, "--registry"},
		{[]string{"--allow-registry", "a/b"}, "--allow-registry"},
		{[]string{"--default-registry", "a/b"}, "--default-registry"},
		{[]string{"--default-registry", ""}, "--default-registry"},
		{[]string{"--max-size", "huge"}, "--max-size"},
		{[]string{"--min-free", "-3"}, "--min-free"},
		{[]string{"--ttl", "-1h"}, "--ttl"},
		{[]string{"--scrub-interval", "-1h"}, "--scrub-interval"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--nope"}, "-nope"},
		{[]string{"extra"}, "extra"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseServe(tt.args, io.Discard)
			var u *usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v; want one line naming %s", err, tt.want)
			}
		})
	}
	t.Setenv("NODECACHE_TAG_TTL", "soon")
	if _, err := parseServe(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "NODECACHE_TAG_TTL") {
		t.Fatalf("bad environment value: %v, want an error naming NODECACHE_TAG_TTL", err)
	}
}

// TestDefaultRegistryNone: --default-registry none leaves the default
// registry empty, which the mirror takes as none, and puts no registry
// named "none" on the allow-list.
func TestDefaultRegistryNone(t *testing.T) {
	cfg, err := parseServe([]string{"--default-registry", "none", "--allow-registry", "ghcr.io"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultRegistry != mirror.NoDefaultRegistry {
		t.Errorf("DefaultRegistry = %q, want mirror.NoDefaultRegistry", cfg.DefaultRegistry)
	}
	if got := strings.Join(cfg.AllowRegistries, ","); got != "ghcr.io" {
		t.Errorf("AllowRegistries = %s, want ghcr.io alone", got)
	}
	t.Setenv("NODECACHE_DEFAULT_REGISTRY", "none")
	if cfg, err := parseServe(nil, io.Discard); err != nil || cfg.DefaultRegistry != mirror.NoDefaultRegistry {
		t.Errorf("NODECACHE_DEFAULT_REGISTRY=none: %q, %v; want none", cfg.DefaultRegistry, err)
	}
}

func TestVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	s, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, content := range []string{"good content", "bad content"} {
		d := digest.FromString(content)
		f, _ := s.Begin(d, int64(len(content)), diskstore.Meta{})
		f.Write([]byte(content))
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	var out bytes.Buffer
	if err := verify([]string{"--data-dir", dir}, &out, io.Discard); err != nil {
		t.Fatalf("verify of a good store: %v\n%s", err, out.String())
	}
	bad := filepath.Join(dir, "blobs", "sha256", ds[1].Encoded()[:2], ds[1].Encoded())
	if err := os.WriteFile(bad, []byte("bad contenT"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = verify([]string{"--data-dir", dir}, &out, io.Discard)
	if !errors.Is(err, errBadEntries) || exitCode(err) == 0 {
		t.Fatalf("verify of a bit-flipped store = %v, want a non-zero exit", err)
	}
	if !strings.Contains(out.String(), "verified 2 entries") || !strings.Contains(out.String(), "1 bad") || !strings.Contains(out.String(), ds[1].String()) {
		t.Fatalf("summary:\n%s", out.String())
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("the bad entry was not removed")
	}
}
