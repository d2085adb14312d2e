package diskstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// fileBytes is the size of a fill's temporary file, removed or not: what
// it holds on the disk.
func fileBytes(t *testing.T, f *Fill) int64 {
	t.Helper()
	fi, err := f.file.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// drain reads r to its end in the background; the channel gets what it
// read and the error that ended it.
func drain(r *Reader) chan readResult {
	done := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(r)
		r.Close()
		done <- readResult{b, err}
	}()
	return done
}

type readResult struct {
	b   []byte
	err error
}

// TestUnknownSizeFillNeverPassesMaxSize: a body without a length (a
// chunked answer that never ends) counts against the bound as it grows.
// Past the bound it streams on to its reader from memory, uncached; once
// that reader has gone, the fill ends and lets go of its file.
func TestUnknownSizeFillNeverPassesMaxSize(t *testing.T) {
	const maxSize = 1 << 20
	s := openStore(t, t.TempDir(), WithMaxSize(maxSize))
	f, err := s.Begin(digest.FromString("never ends"), -1, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, leave := context.WithCancel(context.Background())
	r, err := f.NewReader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	read := drain(r)
	chunk := randomBytes(1, 64<<10)
	for range 4 * maxSize / len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if st := s.Stats(); st.Reserved > maxSize || fileBytes(t, f) > maxSize {
			t.Fatalf("the fill holds %d bytes on disk, %d reserved; the bound is %d", fileBytes(t, f), st.Reserved, maxSize)
		}
	}
	if st := s.Stats(); st.PassThrough != 1 || st.Reserved != 0 || tmpEntries(t, s) != 0 {
		t.Fatalf("past the bound, want the fill streaming uncached, its file removed: %+v, tmp %d", st, tmpEntries(t, s))
	}
	leave()
	if res := <-read; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("reader: %v", res.err)
	}
	// Nobody is left to stream to: the next write ends the fill.
	if _, err := f.Write(chunk); !errors.Is(err, ErrSpilled) {
		t.Fatalf("Write with no reader left = %v, want ErrSpilled", err)
	}
	if _, err := f.file.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the fill still holds its file (%v)", err)
	}
}

// TestUnknownSizeFillPastMaxSizeStillServesItsReader: content of unknown
// size larger than the bound reaches its reader whole and verified, and
// is not cached.
func TestUnknownSizeFillPastMaxSizeStillServesItsReader(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxSize(1<<20))
	data := randomBytes(3, 3<<20)
	d := digest.FromBytes(data)
	f, err := s.Begin(d, -1, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	read := drain(r)
	for off := 0; off < len(data); off += 100_000 {
		if _, err := f.Write(data[off:min(off+100_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Commit(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Commit = %v, want ErrTooLarge (streamed, not cached)", err)
	}
	if res := <-read; res.err != nil || !bytes.Equal(res.b, data) {
		t.Fatalf("the reader got %d bytes, %v; want all %d", len(res.b), res.err, len(data))
	}
	if has(s, d) || s.Stats().Reserved != 0 {
		t.Fatalf("committed=%v %+v", has(s, d), s.Stats())
	}
}

// TestUnknownSizeFillKeepsMinFree: the free space a fill of unknown size
// leaves never drops below min-free.
func TestUnknownSizeFillKeepsMinFree(t *testing.T) {
	const minFree = 2 << 20
	dir := smallFS(t, "4m")
	s := openStore(t, dir, WithMinFree(minFree))
	f, err := s.Begin(digest.FromString("no length"), -1, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort(nil)
	ctx, leave := context.WithCancel(context.Background())
	r, err := f.NewReader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	read := drain(r)
	defer func() { leave(); <-read }()
	chunk := randomBytes(1, 64<<10)
	for range 4 << 20 / len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if _, avail, err := Capacity(dir); err != nil || avail < minFree {
			t.Fatalf("%d bytes free (%v), min-free is %d", avail, err, minFree)
		}
	}
}
