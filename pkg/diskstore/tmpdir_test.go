package diskstore

import (
	"bytes"
	"os"
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
