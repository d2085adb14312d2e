package settings

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newSet() (*flag.FlagSet, *List, *time.Duration) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	l := NewList("a")
	fs.Var(l, "listen", "")
	d := fs.Duration("tag-ttl", time.Second, "")
	fs.String("config", "", "")
	return fs, l, d
}

func TestEnvName(t *testing.T) {
	if got := Env("NODECACHE_HOSTS_CMD_").Name("data-dir"); got != "NODECACHE_HOSTS_CMD_DATA_DIR" {
		t.Fatalf("Name = %s", got)
	}
}

// TestLayers: the command line wins over the environment, which wins
// over the file; a list from the environment is split on commas.
func TestLayers(t *testing.T) {
	fs, l, d := newSet()
	if err := fs.Parse([]string{"--tag-ttl", "5s"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("X_TAG_TTL", "7s")
	t.Setenv("X_LISTEN", " b , c")
	if err := Env("X_").Apply(fs); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.toml")
	if err := os.WriteFile(path, []byte("listen = [\"z\"]\ntag-ttl = \"9s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ApplyFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if *d != 5*time.Second || strings.Join(l.Values, ",") != "b,c" {
		t.Errorf("tag-ttl %v, listen %v; want the flag's 5s and the environment's b,c", *d, l.Values)
	}
}

func TestEnvErrorNamesTheVariable(t *testing.T) {
	fs, _, _ := newSet()
	t.Setenv("Y_TAG_TTL", "soon")
	if err := Env("Y_").Apply(fs); err == nil || !strings.HasPrefix(err.Error(), "Y_TAG_TTL:") {
		t.Fatalf("err = %v, want one naming Y_TAG_TTL", err)
	}
}

func TestFileListReplacesDefaults(t *testing.T) {
	fs, l, _ := newSet()
	path := filepath.Join(t.TempDir(), "s.toml")
	if err := os.WriteFile(path, []byte("listen = [\"x\", \"y\"]\nconfig = \"again\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := ApplyFile(fs, path)
	if err == nil || !strings.Contains(err.Error(), `unknown setting "config"`) || !strings.Contains(err.Error(), "nodecache serve --help") {
		t.Fatalf("err = %v, want config refused as a setting", err)
	}
	if err := os.WriteFile(path, []byte("listen = [\"x\", \"y\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ApplyFile(fs, path); err != nil || strings.Join(l.Values, ",") != "x,y" {
		t.Fatalf("listen %v, %v; want x,y without the default", l.Values, err)
	}
}
