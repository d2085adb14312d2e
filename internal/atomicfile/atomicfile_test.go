package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteReplacesWhole: the new content and mode are in place, and no
// temporary file is left, in the target's directory or in tmpDir.
func TestWriteReplacesWhole(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	path := filepath.Join(dir, "hosts.toml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tmpDir := range []string{"", tmp} {
		if err := Write(tmpDir, path, []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != "new" {
			t.Fatalf("content %q, %v", got, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", fi.Mode().Perm())
		}
		if err := SyncDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{dir, tmp} {
		entries, _ := os.ReadDir(d)
		if d == dir && len(entries) != 1 || d == tmp && len(entries) != 0 {
			t.Errorf("%s holds %d entries", d, len(entries))
		}
	}
	if err := Write("", filepath.Join(dir, "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}
