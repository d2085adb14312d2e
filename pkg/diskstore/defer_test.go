package diskstore

import (
	"context"

	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// filled begins a fill of data in s and writes all of it.
func filled(t *testing.T, s *Store, data []byte) *Fill {
	t.Helper()
	f, err := s.Begin(digest.FromBytes(data), int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f
}

// commitLater runs f.CommitWhenIdle(ctx) in a goroutine; its error arrives
// on the channel.
func commitLater(ctx context.Context, f *Fill) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.CommitWhenIdle(ctx) }()
	return done
}

// waitingCommit starts f.CommitWhenIdle and checks that it waits. cancel
// ends the wait: defer it, so that a failing test's bubble ends.
func waitingCommit(t *testing.T, f *Fill) (done <-chan error, cancel func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done = commitLater(ctx, f)
	if !pending(t, done) {
		cancel()
		t.Fatal("the commit did not wait")
	}
	return done, cancel
}

// onDisk reports whether d's file is in place: committed, without asking
// Stat, which would make a deferred commit run.
func onDisk(s *Store, d digest.Digest) bool {
	_, err := os.Stat(s.path(d))
	return err == nil
}

// pending reports whether the commit whose outcome arrives on done has
// not ended; synctest.Wait first lets every goroutine of the bubble block.
func pending(t *testing.T, done <-chan error) bool {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		return false
	default:
		return true
	}
}

// A verified fill's commit waits until no fill has written for
// commitQuiet; its readers have every byte meanwhile.
func TestDeferredCommitWaitsForQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir())
		defer s.Close()
		a, b := randomBytes(1, 64<<10), randomBytes(2, 64<<10)
		fa := filled(t, s, a)
		fb, err := s.Begin(digest.FromBytes(b), int64(len(b)), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fb.Write(b[:32<<10]); err != nil {
			t.Fatal(err)
		}
		da := fa.Digest()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // a failing test lets the commit go, so that the bubble ends
		done := commitLater(ctx, fa)
		if !pending(t, done) || onDisk(s, da) {
			t.Fatal("the commit ran while the fills had just written")
		}
		found, err := s.Lookup(da)
		if err != nil || found.Presence != BeingFilled {
			t.Fatalf("Lookup during the wait: %v, %v; want the fill", found.Presence, err)
		}
		r, err := found.Fill.NewReader(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAllOf(t, r); string(got) != string(a) {
			t.Fatalf("a reader of the waiting fill got %d bytes, want all %d", len(got), len(a))
		}
		r.Close()

		time.Sleep(200 * time.Millisecond)
		if _, err := fb.Write(b[32<<10:]); err != nil { // the other fill goes on
			t.Fatal(err)
		}
		time.Sleep(commitQuiet - time.Millisecond)
		if !pending(t, done) || onDisk(s, da) {
			t.Fatal("the commit ran less than commitQuiet after a fill wrote")
		}
		time.Sleep(time.Millisecond)
		if pending(t, done) || !onDisk(s, da) {
			t.Fatal("the commit did not run after commitQuiet without writes")
		}
		if err := fb.Commit(); err != nil {
			t.Fatal(err)
		}
	})
}

// Fills that never pause hold a commit back maxCommitDelay at most.
func TestDeferredCommitRunsAfterMaxDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir())
		defer s.Close()
		fa := filled(t, s, randomBytes(3, 4<<10))
		busy := randomBytes(4, 1000)
		fb, err := s.Begin(digest.FromBytes(busy), int64(len(busy)), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := commitLater(ctx, fa)
		start := time.Now()
		step := commitQuiet / 2
		for i := 0; pending(t, done); i++ {
			if time.Since(start) > maxCommitDelay {
				t.Fatalf("the commit still waits after %v", time.Since(start))
			}
			if _, err := fb.Write(busy[i : i+1]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(step)
		}
		if waited := time.Since(start); waited < maxCommitDelay-step {
			t.Fatalf("the commit ran after %v, with a fill writing every %v", waited, step)
		}
		fb.Abort(nil)
	})
}

// Stat and Delete of a digest whose commit waits make it run now, and
// answer after it.
func TestSettleHurriesDeferredCommit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		call   func(s *Store, d digest.Digest) error
		stored bool
	}{
		{"Stat", func(s *Store, d digest.Digest) error { _, err := s.Stat(d); return err }, true},
		{"Delete", func(s *Store, d digest.Digest) error { return s.Delete(d) }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := openStore(t, t.TempDir())
				defer s.Close()
				f := filled(t, s, randomBytes(5, 8<<10))
				done, cancel := waitingCommit(t, f)
				defer cancel()
				start := time.Now()
				if err := tt.call(s, f.Digest()); err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took != 0 {
					t.Errorf("%s waited %v for a deferred commit", tt.name, took)
				}
				if pending(t, done) {
					t.Fatal("the commit still waits")
				}
				if onDisk(s, f.Digest()) != tt.stored {
					t.Errorf("stored = %v after %s, want %v", !tt.stored, tt.name, tt.stored)
				}
			})
		})
	}
}

// A context that ends (the server's shutdown) makes a waiting commit run.
func TestDeferredCommitRunsWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir())
		defer s.Close()
		f := filled(t, s, randomBytes(6, 8<<10))
		done, cancel := waitingCommit(t, f)
		cancel()
		if pending(t, done) || !onDisk(s, f.Digest()) {
			t.Fatal("the commit did not run once its context ended")
		}
	})
}

// Past maxBytes of content waiting, a commit runs at once.
func TestDeferredBytesBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir())
		defer s.Close()
		s.deferral.maxBytes = 100 << 10
		first, second := filled(t, s, randomBytes(7, 64<<10)), filled(t, s, randomBytes(8, 64<<10))
		done1, cancel := waitingCommit(t, first)
		defer cancel()
		if pending(t, commitLater(context.Background(), second)) || !onDisk(s, second.Digest()) {
			t.Fatal("the commit past the bound did not run at once")
		}
		if !pending(t, done1) {
			t.Fatal("the first commit stopped waiting")
		}
	})
}

// Past maxCount commits waiting, a commit runs at once.
func TestDeferredCountBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir())
		defer s.Close()
		s.deferral.maxCount = 2
		var cancels []func()
		defer func() {
			for _, c := range cancels {
				c()
			}
		}()
		for i := range 2 {
			_, cancel := waitingCommit(t, filled(t, s, randomBytes(uint64(300+i), 100)))
			cancels = append(cancels, cancel)
		}
		third := filled(t, s, randomBytes(302, 100))
		if pending(t, commitLater(context.Background(), third)) || !onDisk(s, third.Digest()) {
			t.Fatal("the commit past the bound did not run at once")
		}
	})
}

// A fill that does not fit while a commit waits makes it run, and evicts
// the entry it adds, rather than streaming uncached.
func TestBeginCommitsWaitingFillsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir(), WithMaxSize(100<<10))
		defer s.Close()
		first := filled(t, s, randomBytes(9, 60<<10))
		done, cancel := waitingCommit(t, first)
		defer cancel()
		second := filled(t, s, randomBytes(10, 60<<10)) // fails the test if it cannot begin
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := second.Commit(); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.PassThrough != 0 || st.Evictions != 1 || st.Entries != 1 || onDisk(s, first.Digest()) {
			t.Fatalf("stats %+v, first on disk %v: want the first committed, then evicted", st, onDisk(s, first.Digest()))
		}
	})
}
