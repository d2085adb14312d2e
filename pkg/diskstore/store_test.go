package diskstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// openStore opens the store in dir and waits until its index is loaded
// (after a clean stop the load runs in the background): the tests that
// use it check what the whole store holds. loading_test.go opens stores
// that are still loading.
func openStore(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	waitLoaded(t, s)
	return s
}

// loadTimeout bounds a test whose store never ends its load; a passing
// test does not wait for it.
const loadTimeout = time.Minute

func waitLoaded(t *testing.T, s *Store) {
	t.Helper()
	select {
	case <-s.Loaded():
	case <-time.After(loadTimeout):
		t.Fatal("the store's index did not load")
	}
	if err := s.LoadErr(); err != nil {
		t.Fatalf("load: %v", err)
	}
}

// reopen closes s and opens its directory again, as a restart does.
func reopen(t *testing.T, s *Store, opts ...Option) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openStore(t, s.root, opts...)
}

func put(t *testing.T, s *Store, data []byte, mediaType string) digest.Digest {
	t.Helper()
	return putMeta(t, s, data, Meta{MediaType: mediaType})
}

func readAll(t *testing.T, s *Store, d digest.Digest) []byte {
	t.Helper()
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tmpEntries(t *testing.T, s *Store) int {
	t.Helper()
	names, err := os.ReadDir(s.tmpDir())
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

func TestCommitThenServe(t *testing.T) {
	tests := []struct {
		name      string
		alg       digest.Algorithm
		mediaType string
	}{
		{"sha256 blob", digest.SHA256, ""},
		{"sha512 blob", digest.SHA512, ""},
		{"manifest", digest.SHA256, "application/vnd.oci.image.manifest.v1+json"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			data := randomBytes(uint64(i), 100_000)
			d := tt.alg.FromBytes(data)
			f, err := s.Begin(d, int64(len(data)), Meta{MediaType: tt.mediaType})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat during fill = %v, want ErrNotFound", err)
			}
			if s.Filling(d) != f {
				t.Fatal("Filling does not return the fill in progress")
			}
			f.Write(data[:50_000])
			f.Write(data[50_000:])
			if err := f.Commit(); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, d); !bytes.Equal(got, data) {
				t.Fatal("stored bytes differ")
			}
			info, err := s.Stat(d)
			if err != nil || info.Size != int64(len(data)) || info.MediaType != tt.mediaType {
				t.Fatalf("Stat = %+v, %v", info, err)
			}
			if tmpEntries(t, s) != 0 {
				t.Fatal("tmp/ not empty after commit")
			}
			// Everything survives a reopen.
			s2 := reopen(t, s)
			info2, err := s2.Stat(d)
			if err != nil || info2.Size != info.Size || info2.MediaType != tt.mediaType {
				t.Fatalf("after reopen Stat = %+v, %v", info2, err)
			}
			if got := readAll(t, s2, d); !bytes.Equal(got, data) {
				t.Fatal("stored bytes differ after reopen")
			}
		})
	}
}

func TestBadContentIsNeverCommitted(t *testing.T) {
	data := randomBytes(1, 4096)
	good := digest.FromBytes(data)
	tests := []struct {
		name    string
		d       digest.Digest
		size    int64
		write   []byte
		wantErr error
	}{
		{"wrong digest", digest.FromString("other"), int64(len(data)), data, ErrDigestMismatch},
		{"short", good, int64(len(data)), data[:100], ErrSizeMismatch},
		{"long", good, 100, data, ErrSizeMismatch},
		{"wrong digest unknown size", digest.FromString("other"), -1, data, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			f, err := s.Begin(tt.d, tt.size, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			r, err := f.NewReader(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			_, werr := f.Write(tt.write)
			cerr := f.Commit()
			if !errors.Is(werr, tt.wantErr) && !errors.Is(cerr, tt.wantErr) {
				t.Fatalf("Write err %v, Commit err %v; want %v", werr, cerr, tt.wantErr)
			}
			if _, err := io.ReadAll(r); !errors.Is(err, ErrAborted) {
				t.Fatalf("reader of a bad fill ended with %v, want ErrAborted", err)
			}
			if _, err := s.Stat(tt.d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("bad content was committed: %v", err)
			}
			if s.Filling(tt.d) != nil || tmpEntries(t, s) != 0 {
				t.Fatal("aborted fill left state behind")
			}
			// The next attempt can start afresh.
			if f2, err := s.Begin(tt.d, tt.size, Meta{}); err != nil {
				t.Fatalf("Begin after abort: %v", err)
			} else {
				f2.Abort(nil)
			}
		})
	}
}

func TestBeginRejects(t *testing.T) {
	s := openStore(t, t.TempDir())
	d := put(t, s, []byte("hello"), "")
	if _, err := s.Begin(d, 5, Meta{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Begin of committed = %v, want ErrExists", err)
	}
	d2 := digest.FromString("pending")
	f, err := s.Begin(d2, 7, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort(nil)
	if _, err := s.Begin(d2, 7, Meta{}); !errors.Is(err, ErrFilling) {
		t.Fatalf("second Begin = %v, want ErrFilling", err)
	}
	for _, bad := range []digest.Digest{
		digest.SHA384.FromString("x"),
		"sha256:../../../../etc/passwd",
		"sha256:abc",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"",
	} {
		if _, err := s.Begin(bad, 1, Meta{}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Begin(%q) = %v, want ErrUnsupported", bad, err)
		}
	}
}

// TestReadersStreamDuringFill checks that readers get bytes before the fill
// ends, that the last byte is held back until the digest is verified, and
// that a reader can start at an offset.
func TestReadersStreamDuringFill(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(2, 1000)
	d := digest.FromBytes(data)
	f, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.NewReader(context.Background(), 0)
	defer r.Close()
	f.Write(data[:500])
	buf := make([]byte, 1000)
	n, err := io.ReadAtLeast(r, buf, 499)
	if err != nil || n != 499 || !bytes.Equal(buf[:n], data[:499]) {
		t.Fatalf("read %d bytes, err %v; want the first 499 before the fill ends", n, err)
	}
	f.Write(data[500:])
	// All but the last byte are readable before Commit.
	n, err = io.ReadAtLeast(r, buf, 500)
	if err != nil || n != 500 {
		t.Fatalf("read %d, %v", n, err)
	}
	gotLast := make(chan []byte)
	go func() {
		rest, _ := io.ReadAll(r)
		gotLast <- rest
	}()
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if rest := <-gotLast; !bytes.Equal(rest, data[999:]) {
		t.Fatalf("after commit got %q, want the last byte", rest)
	}

	// A reader from an offset, opened after the fill ended, still works.
	f2data := randomBytes(3, 300)
	f2, _ := s.Begin(digest.FromBytes(f2data), -1, Meta{})
	r2, _ := f2.NewReader(context.Background(), 100)
	defer r2.Close()
	f2.Write(f2data)
	f2.Commit()
	got, err := io.ReadAll(r2)
	if err != nil || !bytes.Equal(got, f2data[100:]) {
		t.Fatalf("offset reader got %d bytes, %v", len(got), err)
	}
}

func TestReaderHonoursContext(t *testing.T) {
	s := openStore(t, t.TempDir())
	f, _ := s.Begin(digest.FromString("slow"), 4, Meta{})
	defer f.Abort(nil)
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := f.NewReader(ctx, 0)
	defer r.Close()
	done := make(chan error)
	go func() {
		_, err := r.Read(make([]byte, 4))
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
}

func TestConcurrentReaders(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(4, 1<<20)
	d := digest.FromBytes(data)
	f, _ := s.Begin(d, int64(len(data)), Meta{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		r, err := f.NewReader(context.Background(), int64(i*1000))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer r.Close()
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, data[i*1000:]) {
				err = errors.New("reader got wrong bytes")
			}
			errs <- err
		})
	}
	for off := 0; off < len(data); off += 7919 {
		f.Write(data[off:min(off+7919, len(data))])
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeleteKeepsOpenReaders(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(5, 10_000)
	d := put(t, s, data, "")
	file, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Delete = %v", err)
	}
	got, err := io.ReadAll(file)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatal("an open reader lost its bytes to Delete")
	}
}

func TestOpenCleansUpAndIgnoresJunk(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d := put(t, s, []byte("kept"), "application/json")
	shard := filepath.Dir(s.path(d))
	orphanType := filepath.Join(shard, digest.FromString("gone").Encoded()+typeSuffix)
	junk := []string{
		filepath.Join(dir, "tmp", "half-written"),
		filepath.Join(shard, "not-a-digest"),
		filepath.Join(dir, "blobs", "sha256", "zz", digest.FromString("misplaced").Encoded()),
		orphanType,
	}
	for _, p := range junk {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s2 := reopen(t, s)
	if s2.Len() != 1 {
		t.Fatalf("Len = %d, want 1 (only the committed entry)", s2.Len())
	}
	if tmpEntries(t, s2) != 0 {
		t.Fatal("leftover fill not removed")
	}
	if _, err := os.Stat(orphanType); !os.IsNotExist(err) {
		t.Fatal("orphan media type file not removed")
	}
	if info, err := s2.Stat(d); err != nil || info.MediaType != "application/json" {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
}
