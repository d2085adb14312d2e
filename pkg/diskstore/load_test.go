package diskstore

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"nodecache/internal/ociref"
)

// FuzzParseName: the loader's allocation-free name parser accepts exactly
// the names parseStoreName (the digest grammar of ociref) accepts, with
// the same key and tail.
func FuzzParseName(f *testing.F) {
	sha256 := strings.Repeat("ab", 32)
	f.Add(uint8(0), "ab", sha256)
	f.Add(uint8(1), "ab", strings.Repeat("ab", 64))
	f.Add(uint8(0), "ab", strings.ToUpper(sha256))
	f.Add(uint8(0), "cd", sha256)
	f.Add(uint8(0), "ab", sha256[:63]+"g")
	f.Add(uint8(0), "ab", sha256+".type")
	f.Fuzz(func(t *testing.T, a uint8, shard, name string) {
		if len(shard) != 2 {
			return // the loader reads two-character shard directories only
		}
		algs := ociref.Algorithms()
		alg := algs[int(a)%len(algs)]
		k, tail, ok := parseName(alg, shard, []byte(name))
		wk, wtail, err := parseStoreName(alg, shard, name)
		if ok != (err == nil) {
			t.Fatalf("parseName(%s, %q, %q) ok = %v, parseStoreName err = %v", alg, shard, name, ok, err)
		}
		if !ok {
			return
		}
		if k != wk || (tail == nil) != (wtail == nil) || (tail != nil && *tail != *wtail) {
			t.Fatalf("parseName(%s, %q, %q) = %v %v, want %v %v", alg, shard, name, k, tail, wk, wtail)
		}
	})
}

// TestLoadSkipsWhatIsNotAnEntry: Open indexes content files only: not a
// directory or a symlink with an entry's name, nor a name in the wrong
// shard or in capitals; and it removes a media type file whose content
// file is gone.
func TestLoadSkipsWhatIsNotAnEntry(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	good := put(t, s, []byte("kept"), "application/vnd.oci.image.manifest.v1+json")
	s.Close()

	hex := strings.Repeat("ab", 32)
	shard := filepath.Join(dir, "blobs", "sha256", "ab")
	if err := os.MkdirAll(filepath.Join(shard, hex), 0o755); err != nil { // a directory
		t.Fatal(err)
	}
	other := "ab" + strings.Repeat("cd", 31)
	if err := os.Symlink(s.path(good), filepath.Join(shard, other)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{strings.ToUpper(other), "cd" + hex[2:], "ab" + strings.Repeat("ef", 31) + typeSuffix} {
		if err := os.WriteFile(filepath.Join(shard, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	s = openStore(t, dir)
	defer s.Close()
	if s.Len() != 1 {
		t.Fatalf("indexed %d entries, want only the one committed", s.Len())
	}
	info, err := s.Stat(good)
	if err != nil || info.MediaType != "application/vnd.oci.image.manifest.v1+json" || info.Size != 4 {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if _, err := os.Stat(filepath.Join(shard, "ab"+strings.Repeat("ef", 31)+typeSuffix)); !os.IsNotExist(err) {
		t.Fatalf("an orphan media type file is still there: %v", err)
	}
}

// TestLoadReadsMediaTypes: media types come back after a restart, short
// ones and one longer than the loader's single read.
func TestLoadReadsMediaTypes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	types := []string{"application/vnd.oci.image.index.v1+json", "application/x." + strings.Repeat("long", maxTypeBytes/4)}
	var digests []digest.Digest
	for i, mt := range types {
		digests = append(digests, put(t, s, []byte{byte(i), 1, 2}, mt))
	}
	s.Close()

	s = openStore(t, dir)
	defer s.Close()
	for i, d := range digests {
		if info, err := s.Stat(d); err != nil || info.MediaType != types[i] {
			t.Fatalf("entry %d: media type %q, %v; want %q", i, info.MediaType, err, types[i])
		}
	}
}

// TestLoadEntryAllocatesNothing: indexing a sha256 entry without a media
// type costs no allocation, its name passed to fstatat where getdents put
// it (the architectures of fstatat_fast.go).
func TestLoadEntryAllocatesNothing(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("fstatat copies the name on", runtime.GOARCH)
	}
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	d := put(t, s, []byte("x"), "")
	hex := d.Encoded()
	shard := filepath.Join(dir, "blobs", "sha256", hex[:2])
	fd, err := unix.Open(shard, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sc := shardScanner{acc: &loadAcc{store: s}, slots: make([]slot, 0, 1)}
	sd := shardDir{alg: ociref.SHA256, name: hex[:2], path: shard}
	name := append([]byte(hex), 0)[:len(hex)] // as getdents leaves it: NUL after
	allocs := testing.AllocsPerRun(100, func() {
		sc.slots = sc.slots[:0]
		sc.entry(fd, sd, name)
	})
	if len(sc.slots) != 1 || sc.slots[0].size != 1 {
		t.Fatalf("indexed %+v, want the one-byte entry", sc.slots)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per entry, want none", allocs)
	}
}
