package tagstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
)

func rec(i int) Record {
	return Record{Digest: digest.FromString(fmt.Sprint(i)), MediaType: "application/vnd.oci.image.index.v1+json", Size: int64(i)}
}

func open(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantRecord(t *testing.T, s *Store, key string, want Record) {
	t.Helper()
	got, ok := s.Get(key)
	if !ok {
		t.Fatalf("%s: no record", key)
	}
	if got.Digest != want.Digest || got.MediaType != want.MediaType || got.Size != want.Size ||
		got.Missing != want.Missing || !got.At.Equal(want.At) {
		t.Fatalf("%s = %+v, want %+v", key, got, want)
	}
}

// TestReopenKeepsRecords: what was set before Close is there after Open,
// with its time, a "not found" included.
func TestReopenKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.NewAt(time.UnixMilli(1_700_000_000_000))
	s := open(t, dir, WithClock(clk.Now))
	s.Set("r/a:v1|", rec(1))
	clk.Advance(time.Second)
	s.Set("r/a:gone|", Record{Missing: true, Size: -1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, WithClock(clk.Now))
	defer s.Close()
	want := rec(1)
	want.At = time.UnixMilli(1_700_000_000_000)
	wantRecord(t, s, "r/a:v1|", want)
	wantRecord(t, s, "r/a:gone|", Record{Missing: true, Size: -1, At: want.At.Add(time.Second)})
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
}

// TestCrashKeepsFlushedRecords: a store that is never closed (kill -9)
// keeps what was flushed; a torn last line is skipped, not fatal.
func TestCrashKeepsFlushedRecords(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Set("r/a:v1|", rec(1))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// The crash tears the line being written.
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(encode("r/a:v2|", rec(2))[:20])
	f.Close()

	s2 := open(t, dir)
	defer s2.Close()
	if _, ok := s2.Get("r/a:v1|"); !ok {
		t.Fatal("a flushed record was lost")
	}
	if _, ok := s2.Get("r/a:v2|"); ok || s2.Len() != 1 {
		t.Fatalf("a torn line was read back (Len %d)", s2.Len())
	}
	// Open rewrote the log without the torn line: appends start clean.
	s2.Set("r/a:v3|", rec(3))
	s2.Close()
	s3 := open(t, dir)
	defer s3.Close()
	if s3.Len() != 2 {
		t.Fatalf("Len = %d after reopening, want 2", s3.Len())
	}
}

// TestRecordsAreBounded: the records, and so the log, stay within the
// bound; the least recently used go first, also across a reopen.
func TestRecordsAreBounded(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, WithMaxRecords(10))
	for i := range 25 {
		s.Set(fmt.Sprintf("r/a:t%d|", i), rec(i))
	}
	s.Close()
	s = open(t, dir, WithMaxRecords(10))
	defer s.Close()
	if s.Len() != 10 {
		t.Fatalf("Len = %d, want 10", s.Len())
	}
	if _, ok := s.Get("r/a:t14|"); ok {
		t.Fatal("an old record survived the bound")
	}
	if _, ok := s.Get("r/a:t24|"); !ok {
		t.Fatal("the newest record was evicted")
	}
}

// TestLogIsCompacted: setting the same keys again and again does not grow
// the log past about twice its records.
func TestLogIsCompacted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	for round := range 50 {
		for i := range 100 {
			s.Set(fmt.Sprintf("r/a:t%d|", i), rec(round))
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte{'\n'}); n > 2*100+compactSlack {
		t.Fatalf("log has %d lines for 100 records, want at most %d", n, 2*100+compactSlack)
	}
}

// TestMaxAgeDropsOldRecords: a record older than the maximum age is not
// read back.
func TestMaxAgeDropsOldRecords(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.NewAt(time.UnixMilli(1_700_000_000_000))
	s := open(t, dir, WithClock(clk.Now))
	s.Set("r/a:old|", rec(1))
	clk.Advance(time.Hour)
	s.Set("r/a:new|", rec(2))
	s.Close()
	clk.Advance(30 * time.Minute)
	s = open(t, dir, WithClock(clk.Now), WithMaxAge(time.Hour))
	defer s.Close()
	if _, ok := s.Get("r/a:old|"); ok {
		t.Fatal("a record older than the maximum age was read back")
	}
	if _, ok := s.Get("r/a:new|"); !ok {
		t.Fatal("a young record was dropped")
	}
}

// TestRunWritesChanges: Run writes a change without Close, so another
// Open (after a kill -9) finds it.
func TestRunWritesChanges(t *testing.T) {
	dir := t.TempDir()
	flushed := make(chan struct{}, 16)
	s := open(t, dir, withFlushHook(func() { flushed <- struct{}{} }), WithFlushInterval(time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	s.Set("r/a:v1|", rec(1))
	<-flushed
	other := open(t, dir)
	defer other.Close()
	if _, ok := other.Get("r/a:v1|"); !ok {
		t.Fatal("the record Run wrote is not in the log")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestInvalidRecordsAreNotKept: keys beyond the bound and records
// without a usable digest are refused, so the log reads back.
func TestInvalidRecordsAreNotKept(t *testing.T) {
	s := open(t, "")
	for key, r := range map[string]Record{
		string(make([]byte, maxKeyLength+1)): rec(1),
		"":                                   rec(1),
		"r/a:bad|":                           {Digest: "sha256:nope"},
		"r/a:missing-with-digest|":           {Missing: true, Digest: rec(1).Digest},
	} {
		s.Set(key, r)
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d, want 0", s.Len())
	}
}

// TestConcurrentUse: Sets, Gets and flushes from many goroutines; run
// with -race.
func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, WithFlushInterval(time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprintf("r/a:t%d|", (g*200+i)%300)
				s.Set(key, rec(i))
				s.Get(key)
				if i%50 == 0 {
					s.Flush()
				}
			}
		})
	}
	wg.Wait()
	cancel()
	<-done
	n := s.Len()
	s.Close()
	if got := open(t, dir).Len(); got != n {
		t.Fatalf("reopened with %d records, want %d", got, n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(bytes.TrimSuffix(encode("r/a:v1|", rec(1)), []byte{'\n'}))
	f.Add([]byte(`{"k":"x","x":true,"t":1}`))
	f.Add([]byte(`{"k":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, r, ok := decode(b)
		if !ok {
			return
		}
		key2, r2, ok2 := decode(bytes.TrimSuffix(encode(key, r), []byte{'\n'}))
		if !ok2 || key2 != key || r2.Digest != r.Digest || r2.Missing != r.Missing || !r2.At.Equal(r.At) {
			t.Fatalf("round trip of %q: %q %+v %v", b, key2, r2, ok2)
		}
	})
}

// TestFailedWriteRewritesFromMemory: after a write fails, nothing pending
// piles up: the next flush rewrites the log from memory, with every
// record, the one whose write failed included.
func TestFailedWriteRewritesFromMemory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Set("r/a:v1|", rec(1))
	s.file.Close() // the next write fails
	s.Set("r/a:v2|", rec(2))
	if err := s.Flush(); err == nil {
		t.Fatal("a write to a closed log did not fail")
	}
	s.Set("r/a:v3|", rec(3))
	if err := s.Flush(); err != nil {
		t.Fatalf("the flush after a failed write: %v", err)
	}
	s.mu.Lock()
	pending := len(s.pending)
	s.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d bytes still pending", pending)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	for i := 1; i <= 3; i++ {
		if _, ok := s.Get(fmt.Sprintf("r/a:v%d|", i)); !ok {
			t.Fatalf("record %d lost after a failed write", i)
		}
	}
}

// TestInterruptedRewriteLeavesTheLog: a rewrite that a crash cut before
// its rename leaves its temporary file and the old log; Open reads the old
// log whole and removes the temporary file.
func TestInterruptedRewriteLeavesTheLog(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Set("r/a:v1|", rec(1))
	s.Close()
	tmp := filepath.Join(dir, "."+logName+".tmp-123")
	if err := os.WriteFile(tmp, encode("r/a:v2|", rec(2))[:10], 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	if _, ok := s.Get("r/a:v1|"); !ok || s.Len() != 1 {
		t.Fatalf("Len = %d, want the old log's one record", s.Len())
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the cut rewrite's temporary file is still there: %v", err)
	}
}
