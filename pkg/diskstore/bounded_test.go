package diskstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
)

func has(s *Store, d digest.Digest) bool {
	_, err := s.Stat(d)
	return err == nil
}

// diskBytes sums the sizes of the content files under blobs/.
func diskBytes(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(filepath.Join(s.root, "blobs"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && filepath.Ext(p) != typeSuffix {
			fi, _ := e.Info()
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, t.TempDir(), WithMaxSize(3000), WithClock(clk.Now))
	a := put(t, s, randomBytes(1, 1000), "")
	clk.Advance(time.Minute)
	b := put(t, s, randomBytes(2, 1000), "")
	clk.Advance(time.Minute)
	c := put(t, s, randomBytes(3, 1000), "")
	clk.Advance(time.Minute)
	f, _, err := s.Open(a) // a serve counts as a use
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	d := put(t, s, randomBytes(4, 1000), "")
	if has(s, b) || !has(s, a) || !has(s, c) || !has(s, d) {
		t.Fatalf("after a use of a, want b evicted: a=%v b=%v c=%v d=%v", has(s, a), has(s, b), has(s, c), has(s, d))
	}
	if st := s.Stats(); st.Evictions != 1 || st.Bytes != 3000 || st.Entries != 3 {
		t.Fatalf("Stats = %+v", st)
	}
	if n := diskBytes(t, s); n != 3000 {
		t.Fatalf("%d bytes on disk, want 3000", n)
	}
}

func TestSpaceIsReservedBeforeWriting(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(3000))
	a := put(t, s, randomBytes(1, 1000), "")
	b := put(t, s, randomBytes(2, 1000), "")
	data := randomBytes(3, 2000)
	f, err := s.Begin(digest.FromBytes(data), 2000, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing written yet, but room for 2000 bytes is already made.
	if has(s, a) || !has(s, b) {
		t.Fatalf("want the oldest entry evicted at Begin: a=%v b=%v", has(s, a), has(s, b))
	}
	if st := s.Stats(); st.Reserved != 2000 || st.Bytes != 1000 {
		t.Fatalf("Stats = %+v, want 2000 reserved and 1000 used", st)
	}
	f.Write(data)
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Reserved != 0 || st.Bytes != 3000 {
		t.Fatalf("after commit Stats = %+v", st)
	}
}

func TestTooLargeIsRefused(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(1000))
	keep := put(t, s, randomBytes(1, 500), "")
	if _, err := s.Begin(digest.FromString("big"), 1001, Meta{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Begin = %v, want ErrTooLarge", err)
	}
	if !has(s, keep) {
		t.Fatal("a fill that can never fit evicted other entries")
	}
	if st := s.Stats(); st.PassThrough != 1 {
		t.Fatalf("PassThrough = %d, want 1", st.PassThrough)
	}
}

// TestBoundHoldsUnderConcurrentFills runs many fills at once and checks
// that committed bytes never exceed the maximum, and that committed plus
// reserved never exceed it by more than the fills in progress.
func TestBoundHoldsUnderConcurrentFills(t *testing.T) {
	const maxSize = 200_000
	s := openStore(t, t.TempDir(), WithMaxSize(maxSize))
	var wg sync.WaitGroup
	var violations atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				data := randomBytes(uint64(w*1000+i), 1000+(w*7919+i*104729)%30_000)
				f, err := s.Begin(digest.FromBytes(data), int64(len(data)), Meta{})
				if err != nil {
					continue
				}
				f.Write(data[:len(data)/2])
				if st := s.Stats(); st.Bytes > maxSize || st.Bytes+st.Reserved > maxSize+8*31_000 {
					violations.Add(1)
				}
				f.Write(data[len(data)/2:])
				if err := f.Commit(); err != nil {
					t.Error(err)
				}
				if st := s.Stats(); st.Bytes > maxSize {
					violations.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := violations.Load(); n != 0 {
		t.Fatalf("the bound was exceeded %d times", n)
	}
	if n := diskBytes(t, s); n > maxSize || n != s.Stats().Bytes {
		t.Fatalf("%d bytes on disk, index says %d, max %d", n, s.Stats().Bytes, maxSize)
	}
}

func TestEvictionDoesNotBreakAReader(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(2000))
	data := randomBytes(1, 1500)
	a := put(t, s, data, "")
	f, _, err := s.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 100)
	io.ReadFull(f, head)
	put(t, s, randomBytes(2, 1500), "") // evicts a
	if has(s, a) {
		t.Fatal("a was not evicted")
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Fatal("the reader of an evicted entry lost its bytes")
	}
}

func TestEvictionWaitsForUnlinkBeforeRecommit(t *testing.T) {
	// An entry evicted and filled again at once must end up present: the
	// new fill's rename must not be undone by the eviction's unlink.
	s := openStore(t, t.TempDir(), WithMaxSize(1000))
	data := randomBytes(1, 600)
	for range 50 {
		put(t, s, data, "")
		put(t, s, randomBytes(2, 600), "") // evicts data
		put(t, s, data, "")                // evicts the other, brings data back
		if got := readAll(t, s, digest.FromBytes(data)); !bytes.Equal(got, data) {
			t.Fatal("re-filled entry lost")
		}
		s.Delete(digest.FromBytes(data))
	}
}

func TestIdleExpiry(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, t.TempDir(), WithIdleTTL(time.Hour), WithClock(clk.Now))
	a := put(t, s, randomBytes(1, 100), "")
	b := put(t, s, randomBytes(2, 100), "application/vnd.oci.image.manifest.v1+json")
	clk.Advance(50 * time.Minute)
	if f, _, err := s.Open(b); err == nil {
		f.Close()
	}
	clk.Advance(20 * time.Minute) // a: 70 min idle; b: 20 min
	s.Sweep()
	if has(s, a) || !has(s, b) {
		t.Fatalf("after sweep: a=%v (want expired) b=%v (want kept)", has(s, a), has(s, b))
	}
	clk.Advance(2 * time.Hour)
	// Expiry is also checked lazily on use, between sweeps.
	if _, _, err := s.Open(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of an expired entry = %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Expirations != 2 || st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if n := diskBytes(t, s); n != 0 {
		t.Fatalf("%d bytes left on disk", n)
	}
}

// TestRestartKeepsEntriesAndRecency reopens a store and checks that the
// entries, media types and the LRU order come back from disk.
func TestRestartKeepsEntriesAndRecency(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, dir, WithClock(clk.Now))
	var ds []digest.Digest
	for i := range 4 {
		ds = append(ds, put(t, s, randomBytes(uint64(i), 1000), "application/vnd.oci.image.index.v1+json"))
		clk.Advance(10 * time.Minute)
	}
	if f, _, err := s.Open(ds[0]); err == nil { // the oldest becomes the newest
		f.Close()
	}
	s2 := reopen(t, s, WithClock(clk.Now), WithMaxSize(3000))
	// Reopening with a smaller bound evicts the least recently used: ds[1].
	if has(s2, ds[1]) || !has(s2, ds[0]) || !has(s2, ds[2]) || !has(s2, ds[3]) {
		t.Fatalf("after restart want ds[1] evicted; have %v %v %v %v", has(s2, ds[0]), has(s2, ds[1]), has(s2, ds[2]), has(s2, ds[3]))
	}
	info, err := s2.Stat(ds[3])
	if err != nil || info.MediaType != "application/vnd.oci.image.index.v1+json" || info.Size != 1000 {
		t.Fatalf("Stat after restart = %+v, %v", info, err)
	}
}

func TestFillOfUnknownSizeStaysBounded(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(2500))
	a := put(t, s, randomBytes(1, 1000), "")
	b := put(t, s, randomBytes(2, 1000), "")
	data := randomBytes(3, 1000)
	f, err := s.Begin(digest.FromBytes(data), -1, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.NewReader(context.Background(), 0)
	defer r.Close()
	f.Write(data)
	f.Commit()
	if has(s, a) || !has(s, b) || s.Stats().Bytes != 2000 {
		t.Fatalf("want the oldest evicted at commit: a=%v b=%v %+v", has(s, a), has(s, b), s.Stats())
	}
}

// TestHopelessFillEvictsNothing: when fills in progress hold most of the
// bound, a fill that cannot fit even in an empty store leaves the cache
// alone and is refused, to be streamed uncached.
func TestHopelessFillEvictsNothing(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(3000))
	a := put(t, s, randomBytes(1, 500), "")
	big, err := s.Begin(digest.FromString("big"), 2500, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Abort(nil)
	if _, err := s.Begin(digest.FromString("more"), 1000, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin = %v, want ErrNoSpace", err)
	}
	if !has(s, a) {
		t.Fatal("a hopeless fill evicted the cache")
	}
}

// TestReaderOfACommittedFill: a reader created after the fill committed
// (and its descriptor was closed) reads the committed file.
func TestReaderOfACommittedFill(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(1, 5000)
	f, err := s.Begin(digest.FromBytes(data), int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := f.NewReader(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data[10:]) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}
