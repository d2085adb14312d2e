package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nodecache.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigFilePrecedence: flags win over NODECACHE_* variables, which
// win over the file; the file fills in the rest, lists included.
func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `
listen = ["127.0.0.1:7001", "unix:///run/nodecache/nodecache.sock"]
tag-ttl = "1m"
ttl = "24h"
log-level = "error"
max-size = "2GiB"
registry = ["localhost:5000=http://127.0.0.1:5000"]
`)
	t.Setenv("NODECACHE_TTL", "48h")
	t.Setenv("NODECACHE_CONFIG", path)
	cfg, err := parseServe([]string{"--log-level", "debug"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Listen, " "); got != "127.0.0.1:7001 unix:///run/nodecache/nodecache.sock" {
		t.Errorf("Listen = %s, want the file's list", got)
	}
	if cfg.TagTTL != time.Minute {
		t.Errorf("TagTTL = %v, want the file's 1m", cfg.TagTTL)
	}
	if cfg.TTL != 48*time.Hour {
		t.Errorf("TTL = %v, want the environment's 48h over the file's 24h", cfg.TTL)
	}
	if cfg.LogLevel.String() != "DEBUG" {
		t.Errorf("LogLevel = %v, want the flag's DEBUG", cfg.LogLevel)
	}
	if cfg.Registries["localhost:5000"] != "http://127.0.0.1:5000" {
		t.Errorf("Registries = %v", cfg.Registries)
	}
	if got, _ := cfg.StoreBounds(1 << 40); got != 2<<30 {
		t.Errorf("max size %d, want 2 GiB", got)
	}
}

// TestBadConfigFileNamesTheSetting: every mistake is one line naming the
// file and the setting.
func TestBadConfigFileNamesTheSetting(t *testing.T) {
	tests := []struct {
		text string
		want string
	}{
		{`data_dir = "/x"`, `unknown setting "data_dir"`},
		{`ttl = 5`, "ttl"},
		{`ttl = "soon"`, "ttl"},
		{`data-dir = ["/a", "/b"]`, "data-dir: takes one value"},
		{`listen = [1, 2]`, "listen: want an array of strings"},
		{`listen = "nowhere"`, "--listen"},
		{`config = "other.toml"`, `unknown setting "config"`},
		{"ttl = \"1h\"\nttl = \"2h\"", "nodecache.toml:2"},
		{`[section]`, `unknown setting "section"`},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			path := writeConfig(t, tt.text)
			_, err := parseServe([]string{"--config", path}, io.Discard)
			var u *usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v; want one line containing %q", err, tt.want)
			}
		})
	}
	if _, err := parseServe([]string{"--config", "/nonexistent/nodecache.toml"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzConfigFile: any file gives a Config or a one-line usage error.
func FuzzConfigFile(f *testing.F) {
	f.Add("listen = [\"127.0.0.1:1\"]\nttl = \"1h\"\n")
	f.Add("max-size = \"15%\"\nregistry = [\"a=http://b\"]")
	f.Add("[x]\ny = 1")
	path := filepath.Join(f.TempDir(), "fuzz.toml")
	f.Fuzz(func(t *testing.T, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := parseServe([]string{"--config", path}, io.Discard)
		var u *usageError
		if err != nil && (!errors.As(err, &u) || strings.Contains(err.Error(), "\n")) {
			t.Fatalf("err = %q; want a one-line usage error", err)
		}
	})
}
