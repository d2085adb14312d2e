package diskstore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
)

func setPins(t *testing.T, s *Store, ds ...digest.Digest) {
	t.Helper()
	if err := s.SetPins(ds); err != nil {
		t.Fatalf("SetPins: %v", err)
	}
}

// TestPinnedSurvivesSizePressure: the size bound evicts the least recently
// used unpinned entries and passes over pinned ones, however old.
func TestPinnedSurvivesSizePressure(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, t.TempDir(), WithMaxSize(3000), WithClock(clk.Now))
	a := put(t, s, randomBytes(1, 1000), "")
	clk.Advance(time.Minute)
	b := put(t, s, randomBytes(2, 1000), "")
	clk.Advance(time.Minute)
	setPins(t, s, a)
	c := put(t, s, randomBytes(3, 1000), "")
	d := put(t, s, randomBytes(4, 1000), "")
	if !has(s, a) || has(s, b) || !has(s, c) || !has(s, d) {
		t.Fatalf("want b evicted and pinned a kept: a=%v b=%v c=%v d=%v", has(s, a), has(s, b), has(s, c), has(s, d))
	}
	e := put(t, s, randomBytes(5, 1000), "")
	if !has(s, a) || has(s, c) || !has(s, e) {
		t.Fatalf("want c evicted next, a kept: a=%v c=%v e=%v", has(s, a), has(s, c), has(s, e))
	}
	// Unpinned, a is the least recently used again, and goes first.
	setPins(t, s)
	put(t, s, randomBytes(6, 1000), "")
	if has(s, a) {
		t.Fatal("an unpinned entry was not evicted")
	}
}

// TestPinnedSurvivesIdleTTL: neither the sweep nor a lazy check on use
// expires a pinned entry.
func TestPinnedSurvivesIdleTTL(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, t.TempDir(), WithIdleTTL(time.Hour), WithClock(clk.Now))
	a := put(t, s, randomBytes(1, 100), "")
	b := put(t, s, randomBytes(2, 100), "")
	c := put(t, s, randomBytes(3, 100), "")
	setPins(t, s, a, c)
	clk.Advance(2 * time.Hour)
	f, _, err := s.Open(c)
	if err != nil {
		t.Fatalf("Open of an idle pinned entry: %v", err)
	}
	f.Close()
	s.Sweep()
	if !has(s, a) || has(s, b) || !has(s, c) {
		t.Fatalf("after sweep: a=%v b=%v (want expired) c=%v", has(s, a), has(s, b), has(s, c))
	}
	if st := s.Stats(); st.Expirations != 1 {
		t.Fatalf("Expirations = %d, want 1", st.Expirations)
	}
}

// TestPinsOverMaxSize: with the pins alone over the bound, nothing pinned
// goes, unpinned entries go, and a new fill is refused rather than let
// the store grow.
func TestPinsOverMaxSize(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := put(t, s, randomBytes(1, 2000), "")
	b := put(t, s, randomBytes(2, 2000), "")
	c := put(t, s, randomBytes(3, 500), "")
	setPins(t, s, a, b)
	s = reopen(t, s, WithMaxSize(3000))
	if !has(s, a) || !has(s, b) || has(s, c) {
		t.Fatalf("after restart with a smaller bound: a=%v b=%v c=%v (want only c evicted)", has(s, a), has(s, b), has(s, c))
	}
	data := randomBytes(4, 100)
	if _, err := s.Begin(digest.FromBytes(data), 100, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin past pinned bytes = %v, want ErrNoSpace", err)
	}
	if st := s.PinStats(); st.Digests != 2 || st.Entries != 2 || st.Bytes != 4000 {
		t.Fatalf("PinStats = %+v", st)
	}
}

// TestPinnedFillRefusedWhenUnpinnedCannotMakeRoom: a fill is refused,
// evicting nothing, when even an empty store but for its pins could not
// take it.
func TestPinnedFillRefusedWhenUnpinnedCannotMakeRoom(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(3000))
	a := put(t, s, randomBytes(1, 2000), "")
	b := put(t, s, randomBytes(2, 500), "")
	setPins(t, s, a)
	if _, err := s.Begin(digest.FromString("big"), 1500, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin = %v, want ErrNoSpace", err)
	}
	if !has(s, b) {
		t.Fatal("a fill that could not fit evicted an unpinned entry")
	}
	// One that fits once b goes does evict b.
	data := randomBytes(3, 900)
	f, err := s.Begin(digest.FromBytes(data), 900, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	f.Abort(nil)
	if has(s, b) || !has(s, a) {
		t.Fatalf("a=%v b=%v, want b evicted for a fill that fits", has(s, a), has(s, b))
	}
}

// TestPinsSurviveRestart: the pinned set is on disk before SetPins
// returns, and Open reads it before its first sweep, so a restart with a
// smaller bound keeps the pinned entries; digests pinned but not stored
// are kept too.
func TestPinsSurviveRestart(t *testing.T) {
	s := openStore(t, t.TempDir())
	a := put(t, s, randomBytes(1, 1000), "")
	b := put(t, s, randomBytes(2, 1000), "")
	absent := digest.FromString("not stored yet")
	setPins(t, s, a, absent)
	// A crash: the store is not closed cleanly, only unlocked.
	s.unlock()
	s2 := openStore(t, s.root, WithMaxSize(1000))
	if !has(s2, a) || has(s2, b) {
		t.Fatalf("after restart: a=%v (pinned) b=%v", has(s2, a), has(s2, b))
	}
	want := []digest.Digest{a, absent}
	slices.Sort(want)
	if got := s2.Pins(); !slices.Equal(got, want) {
		t.Fatalf("Pins after restart = %v, want %v", got, want)
	}
	if !s2.Pinned(absent) || s2.Pinned(b) {
		t.Fatal("Pinned after restart is wrong")
	}
}

// TestPinsFileWithJunk: a line that is not a digest is skipped, the rest
// are loaded.
func TestPinsFileWithJunk(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := put(t, s, randomBytes(1, 10), "")
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, pinsFile), []byte("junk\n\n"+a.String()+"\nsha256:zz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	if got := s.Pins(); !slices.Equal(got, []digest.Digest{a}) {
		t.Fatalf("Pins = %v", got)
	}
	if err := s.SetPins([]digest.Digest{"sha256:nothex"}); err == nil {
		t.Fatal("SetPins took a bad digest")
	}
}

// TestScrubRemovesACorruptPinnedEntry: pins keep content from the bounds,
// not from the scrub: bad bytes go.
func TestScrubRemovesACorruptPinnedEntry(t *testing.T) {
	s, tick := scrubRun(t, t.TempDir(), WithScrubRate(1<<20))
	a := put(t, s, randomBytes(1, 1000), "")
	setPins(t, s, a)
	corrupt(t, s, a)
	for range 3 {
		tick()
	}
	if has(s, a) {
		t.Fatal("a corrupt pinned entry was kept")
	}
}

// TestPinsUnderConcurrentFills races SetPins against fills that evict.
func TestPinsUnderConcurrentFills(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(5000))
	var pinned []digest.Digest
	for i := range 3 {
		pinned = append(pinned, put(t, s, randomBytes(uint64(100+i), 1000), ""))
	}
	setPins(t, s, pinned...)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				data := randomBytes(uint64(1000*g+i), 500)
				if f, err := s.Begin(digest.FromBytes(data), 500, Meta{}); err == nil {
					f.Write(data)
					f.Commit()
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := s.SetPins(pinned); err != nil {
				t.Error(err)
			}
			s.PinStats()
		}
	})
	wg.Wait()
	for _, d := range pinned {
		if !has(s, d) {
			t.Fatalf("pinned %s evicted", d)
		}
	}
	if st := s.Stats(); st.Bytes > 5000 {
		t.Fatalf("store over its bound: %+v", st)
	}
}

// TestDeleteUnpinned: a pinned entry is refused and kept, an unpinned one
// is removed and its size returned, and one not stored is not found.
func TestDeleteUnpinned(t *testing.T) {
	s := openStore(t, t.TempDir())
	a := put(t, s, randomBytes(1, 700), "")
	b := put(t, s, randomBytes(2, 300), "")
	setPins(t, s, a)
	if _, err := s.DeleteUnpinned(a); !errors.Is(err, ErrPinned) {
		t.Fatalf("DeleteUnpinned(pinned) = %v, want ErrPinned", err)
	}
	if !has(s, a) {
		t.Fatal("a pinned entry was deleted")
	}
	info, err := s.DeleteUnpinned(b)
	if err != nil || info.Size != 300 || info.Digest != b {
		t.Fatalf("DeleteUnpinned(unpinned) = %+v, %v", info, err)
	}
	if has(s, b) {
		t.Fatal("an unpinned entry was kept")
	}
	if _, err := s.DeleteUnpinned(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteUnpinned(absent) = %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Bytes != 700 {
		t.Fatalf("store bytes %d after the delete, want 700", st.Bytes)
	}
}
