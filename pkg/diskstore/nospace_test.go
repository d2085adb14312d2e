package diskstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// smallFS mounts a tmpfs of the given size for the test, or skips if that
// is not possible (not root).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestDiskFullMidFill fills a tiny filesystem in the middle of a fill: the
// fill's reader still gets every byte (from memory, verified), nothing is
// committed or left behind, the error is logged once however many fills
// fail, and the next fills are refused up front so callers stream them
// uncached.
func TestDiskFullMidFill(t *testing.T) {
	dir := smallFS(t, "1m")
	var logs bytes.Buffer
	s := openStore(t, dir, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	data := randomBytes(1, 20<<20) // far more than the disk and the memory window
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		b, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("reader of a fill that lost its disk: %v", err)
		}
		r.Close()
		got <- b
	}()
	for off := 0; off < len(data); off += 256 << 10 {
		if _, err := f.Write(data[off:min(off+256<<10, len(data))]); err != nil {
			t.Fatalf("Write after the disk filled: %v", err)
		}
	}
	if err := f.Commit(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Commit = %v, want ErrNoSpace (streamed, not cached)", err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the reader got %d bytes, want all %d", len(b), len(data))
	}
	if has(s, d) || tmpEntries(t, s) != 0 || s.Stats().Reserved != 0 {
		t.Fatalf("a failed fill left state: committed=%v tmp=%d %+v", has(s, d), tmpEntries(t, s), s.Stats())
	}
	for i := range 3 {
		_, err := s.Begin(digest.FromString(string(rune('a'+i))), 2<<20, Meta{})
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Begin on a full disk = %v, want ErrNoSpace", err)
		}
	}
	if n := strings.Count(logs.String(), "cannot write"); n != 1 {
		t.Fatalf("disk error logged %d times, want once:\n%s", n, logs.String())
	}
	if st := s.Stats(); st.PassThrough != 4 {
		t.Fatalf("PassThrough = %d, want 4", st.PassThrough)
	}
	// Small content still fits and is cached; the store recovers.
	small := put(t, s, randomBytes(2, 1000), "")
	if !has(s, small) || !strings.Contains(logs.String(), "writes again") {
		t.Fatalf("store did not recover after space was available:\n%s", logs.String())
	}
}

// TestMinFreeRefusesUpFront: with min-free set, a fill that would eat into
// it is refused before anything is written.
func TestMinFreeRefusesUpFront(t *testing.T) {
	dir := smallFS(t, "1m")
	s := openStore(t, dir, WithMinFree(512<<10))
	old := put(t, s, randomBytes(1, 100_000), "")
	if _, err := s.Begin(digest.FromString("x"), 600<<10, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin = %v, want ErrNoSpace", err)
	}
	if !has(s, old) {
		t.Fatal("a fill that could never fit evicted the cache anyway")
	}
	// 450 KiB fits only once the old entry is gone.
	f, err := s.Begin(digest.FromString("y"), 450<<10, Meta{})
	if err != nil {
		t.Fatalf("a fill that leaves min-free free was refused: %v", err)
	}
	f.Abort(nil)
	if has(s, old) {
		t.Fatal("want the old entry evicted to make room")
	}
}

func TestReadOnlyStore(t *testing.T) {
	dir := smallFS(t, "1m")
	s := openStore(t, dir)
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v: %s", err, out)
	}
	if _, err := s.Begin(digest.FromString("z"), 10, Meta{}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin on a read-only store = %v, want ErrNoSpace (stream uncached)", err)
	}
}
