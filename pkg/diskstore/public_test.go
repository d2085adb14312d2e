package diskstore

import (
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

func putMeta(t *testing.T, s *Store, data []byte, meta Meta) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPublicMarkSurvivesRestart: whether content may go to any client is
// kept in the file's mode, so a restart neither loses a private mark (a
// leak) nor a public one; a file with any other mode reads back private.
func TestPublicMarkSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	pub := putMeta(t, s, []byte("public layer"), Meta{Public: true})
	priv := putMeta(t, s, []byte("private layer"), Meta{})
	later := putMeta(t, s, []byte("found public later"), Meta{})
	if err := s.MarkPublic(later); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, when string) {
		t.Helper()
		for d, want := range map[digest.Digest]bool{pub: true, priv: false, later: true} {
			info, err := s.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if info.Public != want {
				t.Errorf("%s: %s public = %v, want %v", when, d, info.Public, want)
			}
		}
	}
	check(s, "before restart")
	if fi, err := os.Stat(s.path(priv)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("private file mode %v, %v: want no access for group or others", fi.Mode(), err)
	}
	s = reopen(t, s)
	check(s, "after restart")

	// An operator's chmod that drops world-read fails closed.
	if err := os.Chmod(s.path(pub), 0o640); err != nil {
		t.Fatal(err)
	}
	if info, err := reopen(t, s).Stat(pub); err != nil || info.Public {
		t.Errorf("a 0640 file read back as public (%v)", err)
	}
}

// TestMarkPublicDuringFill: content found public while its private fill
// is still running is committed public.
func TestMarkPublicDuringFill(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := []byte("a layer fetched with credentials, public after all")
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:10]); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPublic(d); err != nil {
		t.Fatal(err)
	}
	if !f.Public() {
		t.Error("the fill is not public after MarkPublic")
	}
	if _, err := f.Write(data[10:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if info, err := reopen(t, s).Stat(d); err != nil || !info.Public {
		t.Errorf("after a restart: %+v, %v; want public", info, err)
	}
}
