package diskstore

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
)

// corrupt flips one byte of d's committed file, as a bad disk would: the
// mtime stays.
func corrupt(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	fi, err := os.Stat(s.path(d))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.path(d), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Chtimes(s.path(d), fi.ModTime(), fi.ModTime())
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 7); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 7); err != nil {
		t.Fatal(err)
	}
}

// scrubRun runs s.Run with the scrub driven by the test: tick runs one
// tick and returns the bytes it hashed.
func scrubRun(t *testing.T, dir string, opts ...Option) (s *Store, tick func() int64) {
	t.Helper()
	ticks, ticked := make(chan time.Time), make(chan int64)
	s = openStore(t, dir, append(opts, withScrubTicks(ticks, func(n int64) { ticked <- n }))...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s, func() int64 {
		ticks <- time.Time{}
		return <-ticked
	}
}

// TestScrubFindsAndRemovesACorruptEntry: one pass re-hashes every entry at
// no more than the rate's bytes per tick, and removes and counts the one
// whose bytes no longer match its digest. The next pass waits for the
// interval.
func TestScrubFindsAndRemovesACorruptEntry(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	const rate, size = 1000, 2500 // bytes per second (a tick is one second); bytes per entry
	s, tick := scrubRun(t, t.TempDir(), WithClock(clk.Now), WithScrubRate(rate), WithScrubInterval(time.Hour))
	var ds []digest.Digest
	for i := range 3 {
		ds = append(ds, put(t, s, randomBytes(uint64(i), size), ""))
	}
	corrupt(t, s, ds[1])
	var total int64
	for total < 3*size {
		n := tick()
		if n > rate || (n < rate && total+n < 3*size) {
			t.Fatalf("a tick hashed %d bytes after %d; want %d while work remains", n, total, rate)
		}
		total += n
	}
	if has(s, ds[1]) || !has(s, ds[0]) || !has(s, ds[2]) {
		t.Fatalf("after one pass: %v %v %v; want only the corrupt entry gone", has(s, ds[0]), has(s, ds[1]), has(s, ds[2]))
	}
	if _, err := os.Stat(s.path(ds[1])); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt file is still there (%v)", err)
	}
	if st := s.Stats(); st.Corrupt != 1 || st.ScrubBytes != 3*size {
		t.Fatalf("Corrupt %d, ScrubBytes %d; want 1 and %d", st.Corrupt, st.ScrubBytes, 3*size)
	}
	if n := tick(); n != 0 {
		t.Fatalf("a new pass began at once (%d bytes); want it after the interval", n)
	}
	clk.Advance(time.Hour)
	if n := tick(); n != rate {
		t.Fatalf("after the interval a tick hashed %d bytes, want %d", n, rate)
	}
}

// TestScrubOff: NoScrub hashes nothing.
func TestScrubOff(t *testing.T) {
	s, tick := scrubRun(t, t.TempDir(), WithScrubInterval(NoScrub))
	d := put(t, s, randomBytes(1, 1000), "")
	corrupt(t, s, d)
	if n := tick(); n != 0 || !has(s, d) {
		t.Fatalf("scrub off: hashed %d bytes, entry kept %v", n, has(s, d))
	}
}

// TestReopenAfterCrashReverifiesRecentEntries: after a crash (no clean
// Close), entries written in the minute before it are re-hashed before
// Open returns, so a bad one is never served; older ones wait for the
// scrub. After a clean Close nothing is re-hashed at Open.
func TestReopenAfterCrashReverifiesRecentEntries(t *testing.T) {
	for _, crash := range []bool{true, false} {
		clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
		s := openStore(t, t.TempDir(), WithClock(clk.Now))
		old := put(t, s, randomBytes(1, 3000), "")
		clk.Advance(10 * time.Minute)
		recent := put(t, s, randomBytes(2, 3000), "")
		clk.Advance(30 * time.Second)
		last := put(t, s, randomBytes(3, 3000), "")
		corrupt(t, s, old)
		corrupt(t, s, recent)
		if crash {
			s.unlock() // the process died: the kernel drops the lock, nothing else happens
		} else if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := openStore(t, s.root, WithClock(clk.Now))
		if want := !crash; has(s2, recent) != want || !has(s2, old) || !has(s2, last) {
			t.Fatalf("crash %v: recent kept %v (want %v), old kept %v, last kept %v", crash, has(s2, recent), want, has(s2, old), has(s2, last))
		}
		if want := map[bool]uint64{true: 1, false: 0}[crash]; s2.Stats().Corrupt != want {
			t.Fatalf("crash %v: Corrupt = %d, want %d", crash, s2.Stats().Corrupt, want)
		}
		s2.Close()
	}
}

// Zero means the default interval and rate; NoScrub (any negative
// interval) switches the scrub off.
func TestScrubOptionsZeroRule(t *testing.T) {
	for _, c := range []struct {
		interval, wantInterval time.Duration
		rate, wantRate         int64
	}{
		{0, DefaultScrubInterval, 0, DefaultScrubRate},
		{NoScrub, NoScrub, -5, DefaultScrubRate},
		{time.Hour, time.Hour, 1000, 1000},
	} {
		s := &Store{}
		WithScrubInterval(c.interval)(s)
		WithScrubRate(c.rate)(s)
		if s.scrubInterval != c.wantInterval || s.scrubRate != c.wantRate {
			t.Errorf("%v, %d: got %v, %d; want %v, %d", c.interval, c.rate, s.scrubInterval, s.scrubRate, c.wantInterval, c.wantRate)
		}
	}
}

// TestScrubTickBoundsFiles: a tick of entries far smaller than its
// budget opens budget/scrubFileCost files, not the whole pass, and the
// pass still reaches every entry.
func TestScrubTickBoundsFiles(t *testing.T) {
	const rate, size, entries = 4 * scrubFileCost, 10, 10 // 4 files a tick
	s, tick := scrubRun(t, t.TempDir(), WithScrubRate(rate), WithScrubInterval(time.Hour))
	for i := range entries {
		put(t, s, randomBytes(uint64(100+i), size), "")
	}
	var total int64
	for i := range 3 {
		n := tick()
		if want := min(4, entries-4*i) * size; n != int64(want) {
			t.Fatalf("tick %d hashed %d bytes, want %d: four entries of %d", i, n, want, size)
		}
		total += n
	}
	if st := s.Stats(); total != entries*size || st.ScrubBytes != entries*size || st.Corrupt != 0 {
		t.Fatalf("hashed %d, stats %+v; want all %d bytes", total, st, entries*size)
	}
}

// TestScrubTickStopsWithContext: a tick whose context has ended opens no
// more files (a shutdown does not wait for it), and the pass goes on at
// the next tick.
func TestScrubTickStopsWithContext(t *testing.T) {
	s := openStore(t, t.TempDir(), WithScrubInterval(time.Hour))
	defer s.Close()
	const size = 100
	for i := range 3 {
		put(t, s, randomBytes(uint64(200+i), size), "")
	}
	var sc scrub
	defer sc.close()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if n := s.tickScrub(ended, &sc, 1<<20); n != 0 {
		t.Fatalf("a tick after its context ended hashed %d bytes", n)
	}
	if n := s.tickScrub(context.Background(), &sc, 1<<20); n != 3*size {
		t.Fatalf("the next tick hashed %d bytes, want %d", n, 3*size)
	}
}
