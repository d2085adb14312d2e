package diskstore

import (
	"errors"
	"os"
	"testing"
	"time"

	"nodecache/internal/clocktest"
)

// TestTouch checks that Touch answers from the index as Open does: the
// entry while it is committed, ErrNotFound once deleted or expired, and
// that a touch counts as a use for the idle TTL.
func TestTouch(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, t.TempDir(), WithIdleTTL(time.Hour), WithClock(clk.Now))
	const mt = "application/vnd.oci.image.manifest.v1+json"
	a := put(t, s, randomBytes(1, 100), mt)
	b := put(t, s, randomBytes(2, 100), mt)
	if n := s.Removals(); n != 0 {
		t.Fatalf("Removals = %d before any removal", n)
	}
	info, err := s.Touch(a)
	if err != nil || info.Size != 100 || info.MediaType != mt || info.Digest != a {
		t.Fatalf("Touch = %+v, %v", info, err)
	}
	clk.Advance(50 * time.Minute)
	if _, err := s.Touch(b); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Minute) // a: 70 min idle; b: 20 min
	if _, err := s.Touch(a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Touch of an expired entry = %v, want ErrNotFound", err)
	}
	if _, err := s.Touch(b); err != nil {
		t.Fatalf("Touch of an entry touched 20 min ago = %v", err)
	}
	if n := s.Removals(); n != 1 {
		t.Fatalf("Removals = %d after one expiry", n)
	}
	if err := s.Delete(b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Touch(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Touch of a deleted entry = %v, want ErrNotFound", err)
	}
	if n := s.Removals(); n != 2 {
		t.Fatalf("Removals = %d after an expiry and a delete", n)
	}
	if st := s.Stats(); st.Expirations != 1 || st.Entries != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if _, err := s.Touch("sha256:zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Touch of a bad digest = %v, want ErrNotFound", err)
	}
}

// TestRemovalsCountEvictions: an entry evicted for space counts as a
// removal too.
func TestRemovalsCountEvictions(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(250))
	put(t, s, randomBytes(1, 100), "")
	put(t, s, randomBytes(2, 100), "")
	put(t, s, randomBytes(3, 100), "") // 300 bytes > 250: the oldest goes
	if n, st := s.Removals(), s.Stats(); n != st.Evictions || n == 0 {
		t.Fatalf("Removals = %d, evictions %d", n, st.Evictions)
	}
}

// TestRemoveCorrupt: an entry a reader found corrupt is removed and
// counted, and counts as a removal; a file that is no longer d's is
// left alone.
func TestRemoveCorrupt(t *testing.T) {
	s := openStore(t, t.TempDir())
	d := put(t, s, randomBytes(1, 100), "")
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	corrupt(t, s, d)
	s.RemoveCorrupt(d, f)
	if has(s, d) || s.Removals() != 1 || s.Stats().Corrupt != 1 {
		t.Fatalf("after RemoveCorrupt: kept %v, Removals %d, Corrupt %d; want gone, 1, 1", has(s, d), s.Removals(), s.Stats().Corrupt)
	}
	if _, err := os.Stat(s.path(d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt file is still there (%v)", err)
	}
	put(t, s, randomBytes(1, 100), "") // d filled again: a new, good file
	s.RemoveCorrupt(d, f)              // the old file's report comes late
	if !has(s, d) || s.Removals() != 1 || s.Stats().Corrupt != 1 {
		t.Fatalf("a late report of the old file: kept %v, Removals %d, Corrupt %d; want kept, 1, 1", has(s, d), s.Removals(), s.Stats().Corrupt)
	}
}
