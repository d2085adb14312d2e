package diskstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

// storedEntries fills the store in dir with n entries of size bytes,
// entry i last used i minutes after entry 0, every third a manifest, and
// closes it cleanly. It returns the digests, the oldest first.
func storedEntries(t *testing.T, dir string, n, size int) []digest.Digest {
	t.Helper()
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	s := openStore(t, dir, WithClock(clk.Now))
	var ds []digest.Digest
	for i := range n {
		mt := ""
		if i%3 == 0 {
			mt = manifestType
		}
		ds = append(ds, put(t, s, entryBytes(i, size), mt))
		clk.Advance(time.Minute)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ds
}

func entryBytes(i, size int) []byte { return randomBytes(uint64(1000+i), size) }

// loadGates hold a background load at the steps given, until released.
type loadGates struct {
	reached, proceed map[loadStep]chan struct{}
	once             map[loadStep]*sync.Once
}

func newLoadGates(steps ...loadStep) *loadGates {
	g := &loadGates{reached: map[loadStep]chan struct{}{}, proceed: map[loadStep]chan struct{}{}, once: map[loadStep]*sync.Once{}}
	for _, st := range steps {
		g.reached[st], g.proceed[st], g.once[st] = make(chan struct{}), make(chan struct{}), new(sync.Once)
	}
	return g
}

func (g *loadGates) hook(st loadStep) {
	if r, ok := g.reached[st]; ok {
		close(r)
		<-g.proceed[st]
	}
}

// at waits until the load is held at st.
func (g *loadGates) at(st loadStep) { <-g.reached[st] }

func (g *loadGates) release(st loadStep) { g.once[st].Do(func() { close(g.proceed[st]) }) }

func (g *loadGates) releaseAll() {
	for st := range g.once {
		g.release(st)
	}
}

// openHeld opens the store in dir with its background load held by g.
// The store is closed at the end of the test.
func openHeld(t *testing.T, dir string, g *loadGates, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, append(opts, withLoadHook(g.hook))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.releaseAll() // a failing test must not leave Close waiting for the load
		s.Close()
	})
	return s
}

func loading(s *Store) bool {
	select {
	case <-s.Loaded():
		return false
	default:
		return true
	}
}

// order returns the index from the most recently used entry down.
func order(s *Store) []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []digest.Digest
	for i := s.index.head; i != none; i = s.index.slots[i].next {
		out = append(out, digestOf(s.index.slots[i].key, s.index.record(i)))
	}
	return out
}

func reversed(ds []digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Reverse(out)
	return out
}

// TestHitWhileLoading: while the load has read nothing, every stored
// entry is found from its file, with its bytes, size and media type; a
// digest never stored is not. Once loaded, the index holds each entry
// once, the bytes are counted once, and the entry used during the load is
// the most recently used, above every loaded one.
func TestHitWhileLoading(t *testing.T) {
	dir := t.TempDir()
	ds := storedEntries(t, dir, 10, 1000)
	g := newLoadGates(loadStarting)
	s := openHeld(t, dir, g)
	g.at(loadStarting)
	if !loading(s) {
		t.Fatal("Loaded is closed before the load has read anything")
	}
	f, info, err := s.Open(ds[4])
	if err != nil {
		t.Fatalf("Open of an entry not loaded yet: %v", err)
	}
	got := new(bytes.Buffer)
	got.ReadFrom(f)
	f.Close()
	if !bytes.Equal(got.Bytes(), entryBytes(4, 1000)) || info.Size != 1000 || info.MediaType != "" {
		t.Fatalf("Open while loading = %+v and %d bytes, want entry 4", info, got.Len())
	}
	if found, err := s.Lookup(ds[6]); err != nil || found.Presence != Committed || found.Info.MediaType != manifestType {
		t.Fatalf("Lookup while loading = %+v, %v; want the committed manifest", found, err)
	} else {
		found.File.Close()
	}
	if info, err := s.Stat(ds[3]); err != nil || info.MediaType != manifestType || info.Size != 1000 {
		t.Fatalf("Stat while loading = %+v, %v", info, err)
	}
	if _, err := s.Stat(digest.FromString("never stored")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of a digest never stored = %v, want ErrNotFound", err)
	}
	if _, err := s.Begin(ds[2], 1000, Meta{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Begin of a stored entry not loaded yet = %v, want ErrExists", err)
	}
	if st := s.Stats(); st.Bytes != 10*1000 || st.Entries != 2 {
		t.Fatalf("Stats while loading = %+v, want the clean mark's 10000 bytes and the 2 entries used", st)
	}

	g.releaseAll()
	waitLoaded(t, s)
	if st, n := s.Stats(), s.Len(); st.Bytes != 10*1000 || st.Entries != 10 || n != 10 {
		t.Fatalf("after the load: stats %+v, Len %d; want 10 entries of 10000 bytes", st, n)
	}
	// Used during the load: 6 then 4 (Stat is no use); then the rest
	// by their last use.
	want := []digest.Digest{ds[6], ds[4]}
	for i := 9; i >= 0; i-- {
		if i != 4 && i != 6 {
			want = append(want, ds[i])
		}
	}
	if got := order(s); !slices.Equal(got, want) {
		t.Fatalf("order after the load:\n%v\nwant\n%v", got, want)
	}
	if info, err := s.Stat(ds[9]); err != nil || info.MediaType != manifestType {
		t.Fatalf("Stat after the load = %+v, %v", info, err)
	}
}

// TestFillWhileLoading: a fill committed before the load reads its shard,
// which the load then finds on disk too, and one committed after the load
// has read every shard, are each indexed once, counted once, and stay the
// most recently used.
func TestFillWhileLoading(t *testing.T) {
	dir := t.TempDir()
	ds := storedEntries(t, dir, 6, 1000)
	g := newLoadGates(loadStarting, loadScanned)
	s := openHeld(t, dir, g)
	g.at(loadStarting)
	before := put(t, s, entryBytes(100, 500), manifestType)
	g.release(loadStarting)
	g.at(loadScanned) // the load has read before's file
	after := put(t, s, entryBytes(101, 700), "")
	g.release(loadScanned)
	waitLoaded(t, s)

	if st, n := s.Stats(), s.Len(); st.Bytes != 6*1000+500+700 || st.Entries != 8 || n != 8 {
		t.Fatalf("after the load: stats %+v, Len %d; want 8 entries of %d bytes", st, n, 6*1000+500+700)
	}
	want := append([]digest.Digest{after, before}, reversed(ds)...)
	if got := order(s); !slices.Equal(got, want) {
		t.Fatalf("order after the load:\n%v\nwant\n%v", got, want)
	}
	if info, err := s.Stat(before); err != nil || info.MediaType != manifestType || info.Size != 500 {
		t.Fatalf("Stat of the fill committed during the load = %+v, %v", info, err)
	}
}

// TestRemovedWhileLoadingStaysRemoved: entries the load has read, then
// deleted (found from their files, or used first), evicted by an
// operator, or found gone, are not added back by the load, nor counted.
func TestRemovedWhileLoadingStaysRemoved(t *testing.T) {
	dir := t.TempDir()
	ds := storedEntries(t, dir, 8, 1000)
	g := newLoadGates(loadScanned)
	s := openHeld(t, dir, g)
	g.at(loadScanned) // every shard read: the load holds all eight
	if err := s.Delete(ds[1]); err != nil {
		t.Fatal(err)
	}
	if info, err := s.DeleteUnpinned(ds[2]); err != nil || info.Size != 1000 {
		t.Fatalf("DeleteUnpinned while loading = %+v, %v", info, err)
	}
	if _, err := s.Touch(ds[3]); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ds[3]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Touch(ds[4]); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.path(ds[4])); err != nil { // behind the store's back
		t.Fatal(err)
	}
	if _, _, err := s.Open(ds[4]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a removed file = %v, want ErrNotFound", err)
	}
	for _, i := range []int{1, 2, 3, 4} {
		if has(s, ds[i]) {
			t.Fatalf("entry %d found while loading after its removal", i)
		}
	}
	if st := s.Stats(); st.Bytes != 4*1000 {
		t.Fatalf("bytes while loading = %d, want 4000", st.Bytes)
	}
	g.releaseAll()
	waitLoaded(t, s)
	for _, i := range []int{1, 2, 3, 4} {
		if has(s, ds[i]) {
			t.Fatalf("entry %d back after the load", i)
		}
	}
	if st, n := s.Stats(), s.Len(); st.Bytes != 4*1000 || st.Entries != 4 || n != 4 {
		t.Fatalf("after the load: stats %+v, Len %d; want 4 entries of 4000 bytes", st, n)
	}
	s = reopen(t, s)
	defer s.Close()
	if n := s.Len(); n != 4 || has(s, ds[1]) || has(s, ds[3]) {
		t.Fatalf("after a restart: Len %d; want the 4 kept", n)
	}
}

// TestNoEvictionWhileLoading: while the store loads, a fill is admitted
// against the bound with the clean mark's bytes, and nothing is evicted
// for it (the index lacks the least recently used entries); the load
// then sweeps, evicting the least recently used of the loaded entries,
// never those used during the load, nor a pinned one.
func TestNoEvictionWhileLoading(t *testing.T) {
	dir := t.TempDir()
	ds := storedEntries(t, dir, 10, 1000)
	s := openStore(t, dir)
	if err := s.SetPins([]digest.Digest{ds[2]}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	g := newLoadGates(loadStarting)
	s = openHeld(t, dir, g, WithMaxSize(5500))
	g.at(loadStarting)
	for _, i := range []int{0, 1} {
		if _, err := s.Touch(ds[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Begin(digest.FromBytes(entryBytes(50, 1000)), 1000, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin past the bound while loading = %v, want ErrNoSpace", err)
	}
	s.Sweep()
	if st := s.Stats(); st.Evictions != 0 || st.Bytes != 10*1000 {
		t.Fatalf("stats while loading = %+v, want nothing evicted", st)
	}
	g.releaseAll()
	waitLoaded(t, s)
	// 5 entries fit: 0 and 1 (used), 2 (pinned), 9 and 8 (the newest).
	for i, d := range ds {
		if kept, want := has(s, d), i <= 2 || i >= 8; kept != want {
			t.Fatalf("entry %d kept = %v, want %v", i, kept, want)
		}
	}
	if st := s.Stats(); st.Evictions != 5 || st.Bytes != 5*1000 {
		t.Fatalf("stats after the load = %+v, want 5 evicted", st)
	}
}

// TestCloseWhileLoading: Close stops the load and waits for it, leaving
// no goroutine (the bubble would not end) and no descriptor behind, and
// records the bytes the clean mark had, so that the next Open loads in
// the background again and finds everything.
func TestCloseWhileLoading(t *testing.T) {
	dir := t.TempDir()
	storedEntries(t, dir, 20, 100)
	fds := openFDs(t)
	synctest.Test(t, func(t *testing.T) {
		var scanned bool
		proceed, reached := make(chan struct{}), make(chan struct{})
		s, err := Open(dir, withLoadHook(func(st loadStep) {
			switch st {
			case loadStarting:
				close(reached)
				<-proceed
			case loadScanned:
				scanned = true
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		<-reached
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while the load was held", err)
		default:
		}
		close(proceed)
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if scanned || !loading(s) {
			t.Fatalf("the load went on after Close: scanned %v, loaded %v", scanned, !loading(s))
		}
	})
	if got := openFDs(t); got != fds {
		t.Fatalf("%d descriptors open after Close, %d before Open", got, fds)
	}
	if b, err := os.ReadFile(filepath.Join(dir, cleanName)); err != nil || strings.TrimSpace(string(b)) != "2000" {
		t.Fatalf("clean mark after Close while loading = %q, %v; want 2000", b, err)
	}
	s := openStore(t, dir)
	defer s.Close()
	if st := s.Stats(); st.Entries != 20 || st.Bytes != 2000 {
		t.Fatalf("after the next Open: %+v", st)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(names)
}

// TestLoadBeforeOpenReturns: after a crash (no clean mark), and after a
// clean stop whose mark does not count the bytes (an older version's),
// Open loads the whole index before it returns, with no background load;
// after the crash it also re-hashes the last minute's entries first.
func TestLoadBeforeOpenReturns(t *testing.T) {
	for _, tt := range []struct {
		name string
		mark func(path string) error
	}{
		{"crash", os.Remove},
		{"mark without bytes", func(path string) error { return os.WriteFile(path, nil, 0o600) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ds := storedEntries(t, dir, 5, 1000)
			if err := tt.mark(filepath.Join(dir, cleanName)); err != nil {
				t.Fatal(err)
			}
			// The newest entry goes bad on the disk, keeping its mtime.
			p := filepath.Join(dir, "blobs", "sha256", ds[4].Encoded()[:2], ds[4].Encoded())
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, entryBytes(99, 1000), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chtimes(p, fi.ModTime(), fi.ModTime())
			var background bool
			s, err := Open(dir, withLoadHook(func(loadStep) { background = true }))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if loading(s) || background {
				t.Fatalf("Open returned with the load in the background")
			}
			crash := tt.name == "crash"
			if n := s.Len(); n != 5 && !crash || n != 4 && crash {
				t.Fatalf("Len = %d after Open", n)
			}
			if has(s, ds[4]) == crash {
				t.Fatalf("the bad entry stored = %v after a %s", !crash, tt.name)
			}
		})
	}
}

// TestLoadKeepsTheMediaTypeOfAFillCommitting: a fill's media type file is
// in place before its content is renamed in; a load reading the shard in
// between finds it alone, as after a crash, but leaves it to the fill.
func TestLoadKeepsTheMediaTypeOfAFillCommitting(t *testing.T) {
	dir := t.TempDir()
	storedEntries(t, dir, 3, 100)
	data := entryBytes(200, 300)
	typed := newCommitGate(StepTypeWritten)
	g := newLoadGates(loadStarting)
	s := openHeld(t, dir, g, WithStepHook(typed.hook))
	defer typed.release()
	g.at(loadStarting)
	d, committed := heldCommit(t, s, data, manifestType)
	<-typed.reached
	g.releaseAll()
	waitLoaded(t, s)
	typed.release()
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	defer s.Close()
	if info, err := s.Stat(d); err != nil || info.MediaType != manifestType {
		t.Fatalf("Stat after a restart = %+v, %v; want the manifest's media type", info, err)
	}
}

// TestCommitUnderWayIsNotReadFromDisk: while the store loads, a fill's
// file renamed into place but not yet indexed is the fill's, not an
// entry to take from the disk: a use misses (Lookup finds the fill), and
// the commit then counts its bytes once.
func TestCommitUnderWayIsNotReadFromDisk(t *testing.T) {
	dir := t.TempDir()
	storedEntries(t, dir, 3, 1000)
	data := entryBytes(300, 400)
	renamed := newCommitGate(StepRenamed)
	g := newLoadGates(loadStarting)
	s := openHeld(t, dir, g, WithStepHook(renamed.hook))
	defer renamed.release()
	g.at(loadStarting)
	d, committed := heldCommit(t, s, data, "")
	<-renamed.reached
	if _, err := os.Stat(s.path(d)); err != nil {
		t.Fatalf("the fill's file after its rename: %v", err)
	}
	if _, err := s.Touch(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Touch of a commit under way = %v, want ErrNotFound", err)
	}
	if found, err := s.Lookup(d); err != nil || found.Presence != BeingFilled {
		t.Fatalf("Lookup of a commit under way = %v, %v; want BeingFilled", found.Presence, err)
	}
	renamed.release()
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Bytes != 3*1000+400 {
		t.Fatalf("bytes while loading = %d, want %d", st.Bytes, 3*1000+400)
	}
	g.releaseAll()
	waitLoaded(t, s)
	if st := s.Stats(); st.Bytes != 3*1000+400 || st.Entries != 4 {
		t.Fatalf("after the load: %+v", st)
	}
}
