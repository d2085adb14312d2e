package diskstore

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
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

// TestDiskFullMidFill fills a tiny filesystem: the fill fails without
// committing anything or leaving a temporary file, the error is logged
// once however many fills fail, and the next fill is refused up front so
// the caller can stream it uncached.
func TestDiskFullMidFill(t *testing.T) {
	dir := smallFS(t, "1m")
	var logs bytes.Buffer
	s := openStore(t, dir, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	data := randomBytes(1, 2<<20)
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	_, werr := f.Write(data)
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Write to a full disk = %v, want ENOSPC", werr)
	}
	if has(s, d) || tmpEntries(t, s) != 0 || s.Stats().Reserved != 0 {
		t.Fatalf("a failed fill left state: committed=%v tmp=%d %+v", has(s, d), tmpEntries(t, s), s.Stats())
	}
	for i := range 3 {
		_, err := s.Begin(digest.FromString(string(rune('a'+i))), 2<<20, "")
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Begin on a full disk = %v, want ErrNoSpace", err)
		}
	}
	if n := strings.Count(logs.String(), "cannot write"); n != 1 {
		t.Fatalf("disk error logged %d times, want once:\n%s", n, logs.String())
	}
	if st := s.Stats(); st.PassThrough != 3 {
		t.Fatalf("PassThrough = %d, want 3", st.PassThrough)
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
	if _, err := s.Begin(digest.FromString("x"), 600<<10, ""); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin = %v, want ErrNoSpace", err)
	}
	if !has(s, old) {
		t.Fatal("a fill that could never fit evicted the cache anyway")
	}
	// 450 KiB fits only once the old entry is gone.
	f, err := s.Begin(digest.FromString("y"), 450<<10, "")
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
	if _, err := s.Begin(digest.FromString("z"), 10, ""); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin on a read-only store = %v, want ErrNoSpace (stream uncached)", err)
	}
}
