package diskstore

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestLookup(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(41, 10_000)
	d := digest.FromBytes(data)

	found, err := s.Lookup(d)
	if err != nil || found.Presence != Absent {
		t.Fatalf("before the fill: %v, %v; want Absent", found.Presence, err)
	}
	fill, err := s.Begin(d, int64(len(data)), Meta{MediaType: "application/x-test"})
	if err != nil {
		t.Fatal(err)
	}
	found, err = s.Lookup(d)
	if err != nil || found.Presence != BeingFilled || found.Fill != fill {
		t.Fatalf("during the fill: %v, %v; want BeingFilled with the fill", found.Presence, err)
	}
	if _, err := fill.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fill.Commit(); err != nil {
		t.Fatal(err)
	}
	found, err = s.Lookup(d)
	if err != nil || found.Presence != Committed {
		t.Fatalf("after the commit: %v, %v; want Committed", found.Presence, err)
	}
	defer found.File.Close()
	got, err := io.ReadAll(found.File)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("committed file: %d bytes, %v; want the content", len(got), err)
	}
	if found.Info.Size != int64(len(data)) || found.Info.MediaType != "application/x-test" || found.Info.Digest != d {
		t.Fatalf("info %+v", found.Info)
	}
	if found, err := s.Lookup(digest.Digest("sha384:" + d.Encoded())); err != nil || found.Presence != Absent {
		t.Fatalf("unsupported digest: %v, %v; want Absent", found.Presence, err)
	}
}

// TestLookupNeverAbsentOnceFilling: while a fill commits, lookups that
// run after Begin see it either being filled or committed, never absent.
func TestLookupNeverAbsentOnceFilling(t *testing.T) {
	s := openStore(t, t.TempDir())
	for i := range 20 {
		data := randomBytes(uint64(100+i), 4096)
		d := digest.FromBytes(data)
		fill, err := s.Begin(d, int64(len(data)), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		done := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				for {
					found, err := s.Lookup(d)
					if err != nil || found.Presence == Absent {
						t.Errorf("lookup during commit: %v, %v", found.Presence, err)
						return
					}
					if found.File != nil {
						found.File.Close()
					}
					select {
					case <-done:
						return
					default:
					}
				}
			})
		}
		if _, err := fill.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := fill.Commit(); err != nil {
			t.Fatal(err)
		}
		close(done)
		wg.Wait()
	}
}

// TestReaderOfAFillCommittedThenDeleted: a request that found a fill and
// opens its reader only after the fill was committed and its entry
// deleted gets ErrSpilled, the answer that sends it to fetch its own copy,
// rather than ErrAborted, which would fail it: its bytes were good.
func TestReaderOfAFillCommittedThenDeleted(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomBytes(42, 10_000)
	d := digest.FromBytes(data)
	fill, err := s.Begin(d, int64(len(data)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fill.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fill.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if _, err := fill.NewReader(t.Context(), 0); !errors.Is(err, ErrSpilled) || errors.Is(err, ErrAborted) {
		t.Fatalf("reader after commit and delete: %v; want ErrSpilled", err)
	}
}
