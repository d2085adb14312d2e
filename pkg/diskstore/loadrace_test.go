package diskstore

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
)

// heldCommit begins and writes a fill of data in s and commits it in the
// background; the commit is held at the step its hook gates (see
// commitGate). It returns the commit's outcome channel.
func heldCommit(t *testing.T, s *Store, data []byte, mediaType string) (digest.Digest, <-chan error) {
	t.Helper()
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{MediaType: mediaType})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() { committed <- f.Commit() }()
	return d, committed
}

// commitGate holds commits at step until released.
type commitGate struct {
	step    Step
	reached chan struct{}
	proceed chan struct{}
	once    sync.Once
	at      func() // run in the hook, once reached is signalled and before waiting
}

func newCommitGate(step Step) *commitGate {
	return &commitGate{step: step, reached: make(chan struct{}), proceed: make(chan struct{})}
}

func (c *commitGate) hook(st Step) {
	if st != c.step {
		return
	}
	close(c.reached)
	<-c.proceed
	if c.at != nil {
		c.at()
	}
}

func (c *commitGate) release() { c.once.Do(func() { close(c.proceed) }) }

// TestMergeLeavesACommitUnderWayToItsFill: a fill's file renamed into
// place, its commit not yet done, is read by the load; the merge must
// not index it (the commit does, with its media type), nor count its
// bytes besides the fill's. Then a commit still under way when its entry
// is deleted (settleTimeout) leaves nothing indexed once it lands.
func TestMergeLeavesACommitUnderWayToItsFill(t *testing.T) {
	t.Run("committed", func(t *testing.T) {
		dir := t.TempDir()
		storedEntries(t, dir, 3, 1000)
		c := newCommitGate(StepRenamed)
		defer c.release()
		g := newLoadGates(loadStarting)
		s := openHeld(t, dir, g, WithStepHook(c.hook))
		g.at(loadStarting)
		d, committed := heldCommit(t, s, entryBytes(400, 400), manifestType)
		<-c.reached // the file is in place; the load reads it
		g.releaseAll()
		waitLoaded(t, s)
		if _, err := s.Touch(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Touch of a commit under way after the load = %v, want ErrNotFound", err)
		}
		if st := s.Stats(); st.Bytes != 3*1000+400 || st.Entries != 4 {
			t.Fatalf("stats with the commit under way after the load = %+v, want 4 entries of 3400 bytes", st)
		}
		c.release()
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		if st, n := s.Stats(), s.Len(); st.Bytes != 3*1000+400 || st.Entries != 4 || n != 4 {
			t.Fatalf("after the commit: stats %+v, Len %d; want 4 entries of 3400 bytes", st, n)
		}
		if info, err := s.Stat(d); err != nil || info.MediaType != manifestType {
			t.Fatalf("Stat after the commit = %+v, %v; want the manifest", info, err)
		}
	})
	t.Run("dropped", func(t *testing.T) {
		dir := t.TempDir()
		storedEntries(t, dir, 3, 1000)
		synctest.Test(t, func(t *testing.T) {
			c := newCommitGate(StepRenamed)
			defer c.release()
			g := newLoadGates(loadStarting)
			s := openHeld(t, dir, g, WithStepHook(c.hook))
			g.at(loadStarting)
			d, committed := heldCommit(t, s, entryBytes(401, 400), "")
			<-c.reached
			if err := s.Delete(d); err != nil { // waits settleTimeout, then drops the commit
				t.Fatal(err)
			}
			g.releaseAll()
			<-s.Loaded()
			c.release()
			if err := <-committed; err != nil {
				t.Fatal(err)
			}
			if has(s, d) {
				t.Fatal("the entry deleted while its commit hung is stored after the load")
			}
			if _, err := os.Stat(s.path(d)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("its file: %v, want removed", err)
			}
			if st, n := s.Stats(), s.Len(); st.Bytes != 3*1000 || st.Entries != 3 || n != 3 || diskBytes(t, s) != 3*1000 {
				t.Fatalf("after the load: stats %+v, Len %d, %d bytes on disk; want 3 entries of 3000 bytes",
					st, n, diskBytes(t, s))
			}
		})
	})
}

// TestFailedCommitIsNotLoaded: a commit that fails after its rename
// takes its file away; a load that read the file meanwhile must not
// index it.
func TestFailedCommitIsNotLoaded(t *testing.T) {
	dir := t.TempDir()
	storedEntries(t, dir, 3, 1000)
	c := newCommitGate(StepRenamed)
	defer c.release()
	g := newLoadGates(loadStarting, loadScanned)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	// The directory's sync after the rename fails: no descriptor is left
	// to open it with. Nothing else runs meanwhile (the load is held).
	c.at = func() {
		low := lim
		low.Cur = 3
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
			t.Error(err)
		}
	}
	s := openHeld(t, dir, g, WithStepHook(c.hook))
	g.at(loadStarting)
	d, committed := heldCommit(t, s, entryBytes(402, 400), "")
	<-c.reached
	g.release(loadStarting)
	g.at(loadScanned) // the load has read the renamed file
	c.release()
	err := <-committed
	if serr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); serr != nil {
		t.Fatal(serr)
	}
	if err == nil {
		t.Fatal("Commit succeeded with no descriptor to sync the directory")
	}
	if _, err := os.Stat(s.path(d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed commit's file: %v, want removed", err)
	}
	if _, err := s.Touch(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Touch of the failed commit while loading = %v, want ErrNotFound", err)
	}
	g.releaseAll()
	waitLoaded(t, s)
	if has(s, d) {
		t.Fatal("the failed commit is indexed after the load")
	}
	if st, n := s.Stats(), s.Len(); st.Bytes != 3*1000 || st.Entries != 3 || n != 3 {
		t.Fatalf("after the load: stats %+v, Len %d; want 3 entries of 3000 bytes", st, n)
	}
}

// TestNoNewReaderOfADroppedFill: once Delete has returned, a fill whose
// commit it dropped (settleTimeout) serves no new reader: the entry is
// deleted. A reader that joined before reads on.
func TestNoNewReaderOfADroppedFill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := randomBytes(13, 10<<10)
		s, reached, proceed := gatedStore(t, t.TempDir(), StepWritten, nil)
		defer s.Close()
		var once sync.Once
		release := func() { once.Do(proceed) }
		defer release()
		d := digest.FromBytes(data)
		f, err := s.Begin(d, int64(len(data)), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		early, err := f.NewReader(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer early.Close()
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		committed := make(chan error, 1)
		go func() { committed <- f.Commit() }()
		<-reached
		if err := s.Delete(d); err != nil {
			t.Fatal(err)
		}
		found, err := s.Lookup(d)
		if err != nil {
			t.Fatal(err)
		}
		switch found.Presence {
		case Committed:
			found.File.Close()
			t.Fatal("Lookup after Delete finds the entry committed")
		case BeingFilled:
			if r, err := found.Fill.NewReader(context.Background(), 0); !errors.Is(err, ErrSpilled) {
				if err == nil {
					r.Close()
				}
				t.Fatalf("a new reader of the dropped fill = %v, want ErrSpilled", err)
			}
		}
		if got := readAllOf(t, early); len(got) != len(data) {
			t.Fatalf("the reader that joined before the Delete read %d bytes, want %d", len(got), len(data))
		}
		release()
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
	})
}

// TestMergeIndexesADuplicateOnce: a directory read while names are
// removed and created again may list a name twice (btrfs, tmpfs: a new
// name gets a new, later position); the index holds it once and counts
// its bytes once.
func TestMergeIndexesADuplicateOnce(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	k, _, _ := keyOf(digest.FromString("twice"))
	k2, _, _ := keyOf(digest.FromString("once"))
	sl := func(k key, used int64) slot { return slot{key: k, size: 100, used: used, prev: none, next: none} }
	s.merge(&loadAcc{slots: []slot{sl(k, 10), sl(k2, 15), sl(k, 20)}, tails: map[key]*[32]byte{}})
	var listed int
	s.mu.Lock()
	for i := s.index.head; i != none; i = s.index.slots[i].next {
		listed++
	}
	s.mu.Unlock()
	if st, n := s.Stats(), s.Len(); n != 2 || listed != 2 || st.Bytes != 200 {
		t.Fatalf("after a merge of a name listed twice: Len %d, %d in the order, %d bytes; want 2, 2, 200", n, listed, st.Bytes)
	}
	s.mu.Lock()
	s.index.Remove(k)
	oldest, _, ok := s.index.GetOldest()
	s.mu.Unlock()
	if !ok || oldest != k2 {
		t.Fatal("the name listed twice is still in the order after its removal")
	}
}
