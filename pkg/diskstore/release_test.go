package diskstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// readerTimeout bounds a test whose reader never gets its bytes; a passing
// test does not wait for it.
const readerTimeout = 30 * time.Second

// readAllOf reads r to the end in a goroutine, so that a reader that
// blocks fails the test rather than hanging it.
func readAllOf(t *testing.T, r io.Reader) []byte {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		got <- result{b, err}
	}()
	select {
	case res := <-got:
		if res.err != nil {
			t.Fatalf("read: %v", res.err)
		}
		return res.b
	case <-time.After(readerTimeout):
		t.Fatal("the reader did not get the last byte")
		return nil
	}
}

// gatedStore opens a store whose commits stop at step until the test
// lets them go on; reached gets a value when a commit stops there.
func gatedStore(t *testing.T, dir string, step Step, at func()) (s *Store, reached <-chan struct{}, proceed func()) {
	t.Helper()
	r, p := make(chan struct{}, 1), make(chan struct{})
	s = openStore(t, dir, WithStepHook(func(st Step) {
		if st != step {
			return
		}
		if at != nil {
			at()
		}
		r <- struct{}{}
		<-p
	}))
	return s, r, func() { close(p) }
}

// TestReadersGetTheLastByteBeforeTheCommit: once verified, a fill's
// readers, and a reader that joins while the commit is still pending,
// read the whole content while the entry is not yet committed.
func TestReadersGetTheLastByteBeforeTheCommit(t *testing.T) {
	data := randomBytes(7, 300<<10)
	s, reached, proceed := gatedStore(t, t.TempDir(), StepSynced, nil)
	defer s.Close()
	f, err := s.Begin(digest.FromBytes(data), int64(len(data)), Meta{})
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
	<-reached // verified and fsynced, not renamed

	if got := readAllOf(t, early); !bytes.Equal(got, data) {
		t.Fatalf("reader got %d bytes, want the %d written", len(got), len(data))
	}
	if _, err := os.Stat(s.path(f.Digest())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the entry's file before the rename: %v, want none", err)
	}
	found, err := s.Lookup(f.Digest())
	if err != nil || found.Presence != BeingFilled {
		t.Fatalf("Lookup while committing = %v, %v; want BeingFilled", found.Presence, err)
	}
	late, err := found.Fill.NewReader(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if got := readAllOf(t, late); !bytes.Equal(got, data[1000:]) {
		t.Fatal("a reader joining during the commit got wrong bytes")
	}
	if err := f.Verified(context.Background()); err != nil {
		t.Fatalf("Verified = %v", err)
	}

	// Stat answers with the commit's outcome, not "not found" meanwhile.
	stat := make(chan error, 1)
	go func() {
		_, err := s.Stat(f.Digest())
		stat <- err
	}()
	proceed()
	if err := <-committed; err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := <-stat; err != nil {
		t.Fatalf("Stat during the commit: %v", err)
	}
	if got := readAll(t, s, f.Digest()); !bytes.Equal(got, data) {
		t.Fatal("committed entry holds wrong bytes")
	}
}

// TestCommitFailingAfterTheRelease: the content is verified and its
// readers have it, but the rename fails (the temporary file is gone). The
// readers keep every byte, nothing is stored, a latecomer is turned away
// with ErrSpilled, and the next fill of the digest stores it.
func TestCommitFailingAfterTheRelease(t *testing.T) {
	data := randomBytes(8, 200<<10)
	dir := t.TempDir()
	var failed atomic.Bool
	removeTmp := func() { // the first commit only
		if failed.Swap(true) {
			return
		}
		names, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		for _, n := range names {
			os.Remove(filepath.Join(dir, "tmp", n.Name()))
		}
	}
	s, reached, proceed := gatedStore(t, dir, StepReleased, removeTmp)
	defer s.Close()
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() { committed <- f.Commit() }()
	<-reached
	proceed()
	if err := <-committed; err == nil {
		t.Fatal("Commit succeeded without its temporary file")
	}

	if got := readAllOf(t, r); !bytes.Equal(got, data) {
		t.Fatalf("reader got %d bytes after the failed commit, want the %d verified", len(got), len(data))
	}
	// The last reader's Close lets go of the fill's descriptor.
	if _, err := f.file.Stat(); err != nil {
		t.Fatalf("the fill's file while a reader has it: %v", err)
	}
	r.Close()
	if _, err := f.file.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the fill's file after its last reader closed: %v, want it closed", err)
	}
	if err := f.Verified(context.Background()); err != nil {
		t.Fatalf("Verified after a failed commit = %v, want nil", err)
	}
	if _, err := f.NewReader(context.Background(), 0); !errors.Is(err, ErrSpilled) {
		t.Fatalf("NewReader after the failed commit = %v, want ErrSpilled", err)
	}
	if found, err := s.Lookup(d); err != nil || found.Presence != Absent {
		t.Fatalf("Lookup = %v, %v; want Absent", found.Presence, err)
	}
	if st := s.Stats(); st.Reserved != 0 || st.Entries != 0 {
		t.Fatalf("stats after the failed commit = %+v, want nothing reserved or stored", st)
	}

	again, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatalf("Begin after the failed commit: %v", err)
	}
	if _, err := again.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := again.Commit(); err != nil {
		t.Fatalf("second Commit: %v", err)
	}
	if got := readAll(t, s, d); !bytes.Equal(got, data) {
		t.Fatal("the refilled entry holds wrong bytes")
	}
}

// TestFailedCommitLeavesNoMediaTypeFile: a commit that fails after its
// media type file is in place (here the rename, its temporary file gone)
// takes that file away again, so that nothing of the entry is left to
// be read back after a restart under a later fill of the same digest.
func TestFailedCommitLeavesNoMediaTypeFile(t *testing.T) {
	data := randomBytes(9, 10<<10)
	dir := t.TempDir()
	removeTmp := func() {
		names, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		for _, n := range names {
			os.Remove(filepath.Join(dir, "tmp", n.Name()))
		}
	}
	s, reached, proceed := gatedStore(t, dir, StepTypeWritten, removeTmp)
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{MediaType: "application/vnd.oci.image.manifest.v1+json"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() { committed <- f.Commit() }()
	<-reached
	proceed()
	if err := <-committed; err == nil {
		t.Fatal("Commit succeeded without its temporary file")
	}
	if _, err := os.Stat(s.path(d) + typeSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("media type file after the failed commit: %v, want none", err)
	}

	// A later fill of the same bytes as a plain blob: after a restart the
	// entry has no media type.
	plain := put(t, s, data, "")
	s.Close()
	s = openStore(t, dir)
	defer s.Close()
	if info, err := s.Stat(plain); err != nil || info.MediaType != "" {
		t.Fatalf("Stat after a restart = %+v, %v; want the plain blob", info, err)
	}
}

// TestStatsCountACommitUnderWay: while a verified fill's commit is held
// before its rename, Stats and Len answer at once and count the entry as
// stored; once the commit fails, it is counted no more.
func TestStatsCountACommitUnderWay(t *testing.T) {
	data := randomBytes(10, 20<<10)
	dir := t.TempDir()
	removeTmp := func() {
		names, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		for _, n := range names {
			os.Remove(filepath.Join(dir, "tmp", n.Name()))
		}
	}
	s, reached, proceed := gatedStore(t, dir, StepSynced, removeTmp)
	defer s.Close()
	f, err := s.Begin(digest.FromBytes(data), int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 || st.Reserved != int64(len(data)) {
		t.Fatalf("stats while writing = %+v, want the bytes reserved, nothing stored", st)
	}
	committed := make(chan error, 1)
	go func() { committed <- f.Commit() }()
	<-reached // released and fsynced, held before the rename

	type answer struct {
		st Stats
		n  int
	}
	got := make(chan answer, 1)
	go func() { got <- answer{s.Stats(), s.Len()} }()
	select {
	case a := <-got:
		if a.st.Entries != 1 || a.st.Bytes != int64(len(data)) || a.st.Reserved != 0 || a.n != 1 {
			t.Fatalf("during the commit: stats %+v, Len %d; want the entry counted as stored", a.st, a.n)
		}
	case <-time.After(readerTimeout):
		t.Fatal("Stats waited for the commit")
	}
	proceed()
	if err := <-committed; err == nil {
		t.Fatal("Commit succeeded without its temporary file")
	}
	if st, n := s.Stats(), s.Len(); st.Entries != 0 || st.Bytes != 0 || st.Reserved != 0 || n != 0 {
		t.Fatalf("after the failed commit: stats %+v, Len %d; want nothing", st, n)
	}
}

// TestStatAndDeleteWaitForTheCommitUnderWay: a Stat or a Delete of a
// digest whose fill is verified, its commit held before the rename, waits
// for the commit (synctest.Wait sees it blocked), then answers after it:
// Stat finds the entry, and Delete removes it rather than being undone
// by the rename that follows.
func TestStatAndDeleteWaitForTheCommitUnderWay(t *testing.T) {
	tests := []struct {
		name      string
		call      func(s *Store, d digest.Digest) error
		wantAfter bool // the entry is stored once both are done
	}{
		{"Stat", func(s *Store, d digest.Digest) error { _, err := s.Stat(d); return err }, true},
		{"Delete", func(s *Store, d digest.Digest) error { return s.Delete(d) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				data := randomBytes(11, 10<<10)
				s, reached, proceed := gatedStore(t, t.TempDir(), StepSynced, nil)
				defer s.Close()
				// A failing test lets the commit go too, so that the
				// bubble's goroutines end.
				var once sync.Once
				release := func() { once.Do(proceed) }
				defer release()
				d := digest.FromBytes(data)
				f, err := s.Begin(d, int64(len(data)), Meta{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Write(data); err != nil {
					t.Fatal(err)
				}
				committed := make(chan error, 1)
				go func() { committed <- f.Commit() }()
				<-reached // released, held before the rename

				answered := make(chan error, 1)
				go func() { answered <- tt.call(s, d) }()
				synctest.Wait()
				select {
				case err := <-answered:
					t.Fatalf("%s answered (%v) while the commit was under way", tt.name, err)
				default:
				}
				release()
				if err := <-committed; err != nil {
					t.Fatalf("Commit: %v", err)
				}
				if err := <-answered; err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if stored := has(s, d); stored != tt.wantAfter {
					t.Fatalf("stored after the commit and %s = %v, want %v", tt.name, stored, tt.wantAfter)
				}
			})
		})
	}
}

// TestSettleIsBounded: a Stat or a Delete of a digest whose commit hangs
// (held here before its fsync) waits settleTimeout, not for ever. Then
// Stat misses, and the entry is stored once the commit lands; Delete and
// DeleteUnpinned succeed, and the commit, when it lands, removes its
// files rather than undo the deletion, also across a restart.
func TestSettleIsBounded(t *testing.T) {
	const mediaType = "application/vnd.oci.image.manifest.v1+json"
	tests := []struct {
		name      string
		call      func(s *Store, d digest.Digest) error
		wantErr   error
		wantAfter bool // the entry is stored once the commit lands
	}{
		{"Stat", func(s *Store, d digest.Digest) error { _, err := s.Stat(d); return err }, ErrNotFound, true},
		{"Delete", func(s *Store, d digest.Digest) error { return s.Delete(d) }, nil, false},
		{"DeleteUnpinned", func(s *Store, d digest.Digest) error {
			info, err := s.DeleteUnpinned(d)
			if err == nil && (info.Digest != d || info.Size != 10<<10 || info.MediaType != mediaType) {
				return fmt.Errorf("DeleteUnpinned = %+v, want the fill's entry", info)
			}
			return err
		}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				data := randomBytes(12, 10<<10)
				dir := t.TempDir()
				s, reached, proceed := gatedStore(t, dir, StepWritten, nil)
				var once sync.Once
				release := func() { once.Do(proceed) }
				defer release()
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
				<-reached // released, held before the fsync

				start := time.Now()
				if err := tt.call(s, d); !errors.Is(err, tt.wantErr) {
					t.Fatalf("%s while the commit hangs = %v, want %v", tt.name, err, tt.wantErr)
				}
				if waited := time.Since(start); waited != settleTimeout {
					t.Fatalf("%s waited %v, want settleTimeout (%v)", tt.name, waited, settleTimeout)
				}
				wantEntries := 1
				if !tt.wantAfter {
					wantEntries = 0 // the deletion counts at once
				}
				if st, n := s.Stats(), s.Len(); st.Entries != wantEntries || n != wantEntries {
					t.Fatalf("while the commit hangs: stats %+v, Len %d; want %d entries", st, n, wantEntries)
				}
				release()
				if err := <-committed; err != nil {
					t.Fatalf("Commit: %v", err)
				}
				if stored := has(s, d); stored != tt.wantAfter {
					t.Fatalf("stored after the commit landed = %v, want %v", stored, tt.wantAfter)
				}
				for _, p := range []string{s.path(d), s.path(d) + typeSuffix} {
					if _, err := os.Stat(p); (err == nil) != tt.wantAfter {
						t.Fatalf("%s after the commit landed: %v, want present %v", p, err, tt.wantAfter)
					}
				}
				if st := s.Stats(); st.Reserved != 0 {
					t.Fatalf("reserved after the commit = %d, want 0", st.Reserved)
				}
				s = reopen(t, s)
				defer s.Close()
				if stored := has(s, d); stored != tt.wantAfter {
					t.Fatalf("stored after a restart = %v, want %v", stored, tt.wantAfter)
				}
				if !tt.wantAfter {
					// The digest can be filled again.
					if got := put(t, s, data, mediaType); !has(s, got) {
						t.Fatal("a new fill after the dropped commit is not stored")
					}
				}
			})
		})
	}
}
