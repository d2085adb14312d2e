package diskstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestFillRecreatesRemovedTmpDir: an operator (or a cleaner) removing
// data-dir/tmp while the store runs must not turn caching off until a
// restart; the next fill puts the directory back and commits.
func TestFillRecreatesRemovedTmpDir(t *testing.T) {
	s := openStore(t, t.TempDir())
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1, 4000)
	d := putMeta(t, s, data, Meta{MediaType: "application/vnd.oci.image.manifest.v1+json"})
	if got := readAll(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes back, want %d", len(got), len(data))
	}
	if st := s.Stats(); st.PassThrough != 0 {
		t.Fatalf("the fill streamed uncached: %+v", st)
	}
}

// TestCloseRecreatesRemovedTmpDir: the clean-stop mark is written through
// tmp/ too, so a removed tmp/ must not make every clean stop look like a
// crash.
func TestCloseRecreatesRemovedTmpDir(t *testing.T) {
	s := openStore(t, t.TempDir())
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, cleanName)); err != nil {
		t.Fatalf("no clean-stop mark: %v", err)
	}
}
