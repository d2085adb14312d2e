package blobio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeSource serves data from any offset. Each Open is logged; the n-th
// body (1-based, over all sources of a test) breaks after cut[n] bytes if
// set, with an error or, if eof, a premature io.EOF.
type fakeSource struct {
	name string
	data []byte
	log  *openLog
	fail error // if set, Open fails with it
}

type openLog struct {
	mu    sync.Mutex // guards opens
	opens []string   // "name@offset"
	cut   map[int]int
	eof   bool
}

func (l *openLog) add(name string, off int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opens = append(l.opens, fmt.Sprintf("%s@%d", name, off))
	return len(l.opens)
}

func (l *openLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.opens)
}

func (s *fakeSource) Name() string { return s.name }

func (s *fakeSource) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	n := s.log.add(s.name, off)
	if s.fail != nil {
		return nil, s.fail
	}
	return s.log.body(n, s.data[off:]), nil
}

var errCut = errors.New("connection reset")

// body returns the n-th body over rest, cut as the log says.
func (l *openLog) body(n int, rest []byte) io.ReadCloser {
	var r io.Reader = bytes.NewReader(rest)
	if c, ok := l.cut[n]; ok && c < len(rest) {
		r = bytes.NewReader(rest[:c])
		if !l.eof {
			r = io.MultiReader(r, errReader{errCut})
		}
	}
	return io.NopCloser(r)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestResumer(t *testing.T) {
	data := randomBytes(1, 10_000)
	errDown := errors.New("source down")
	tests := []struct {
		name     string
		sources  int   // how many sources to continue from, "a", "b", ...; "first" sent the first body
		failing  []int // sources whose Open fails
		cut      map[int]int
		eof      bool // cuts end with a premature io.EOF instead of an error
		offset   int64
		size     int64
		budget   int
		want     []string // the opens after the first body
		wantErr  error
		wantRead int
	}{
		{name: "whole", sources: 1, size: 10_000, budget: 3, wantRead: 10_000},
		{name: "one cut", sources: 1, cut: map[int]int{1: 1000}, size: 10_000, budget: 3,
			want: []string{"a@1000"}, wantRead: 10_000},
		{name: "cuts within budget", sources: 1, cut: map[int]int{1: 1000, 2: 1000, 3: 1000}, size: 10_000, budget: 3,
			want: []string{"a@1000", "a@2000", "a@3000"}, wantRead: 10_000},
		{name: "budget spent", sources: 1, cut: map[int]int{1: 1000, 2: 1000, 3: 1000}, size: 10_000, budget: 2,
			want: []string{"a@1000", "a@2000"}, wantErr: ErrResume, wantRead: 3000},
		{name: "premature EOF is a break", sources: 1, cut: map[int]int{1: 1000}, eof: true, size: 10_000, budget: 1,
			want: []string{"a@1000"}, wantRead: 10_000},
		{name: "EOF with unknown size is the end", sources: 1, cut: map[int]int{1: 1000}, eof: true, size: -1, budget: 1,
			wantRead: 1000},
		{name: "next source", sources: 2, cut: map[int]int{1: 1000, 2: 500}, size: 10_000, budget: 2,
			want: []string{"a@1000", "b@1500"}, wantRead: 10_000},
		{name: "last source again", sources: 2, cut: map[int]int{1: 1000, 2: 500, 3: 500}, size: 10_000, budget: 3,
			want: []string{"a@1000", "b@1500", "b@2000"}, wantRead: 10_000},
		{name: "next source down", sources: 2, failing: []int{2}, cut: map[int]int{1: 1000, 2: 500}, size: 10_000, budget: 2,
			want: []string{"a@1000", "b@1500"}, wantErr: errDown, wantRead: 1500},
		{name: "from an offset", sources: 1, cut: map[int]int{1: 1000}, offset: 4000, size: 10_000, budget: 1,
			want: []string{"a@5000"}, wantRead: 6000},
		{name: "zero budget", sources: 2, cut: map[int]int{1: 1000}, size: 10_000, budget: 0,
			wantErr: errCut, wantRead: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &openLog{cut: tt.cut, eof: tt.eof}
			var srcs []Source
			for i := range tt.sources {
				s := &fakeSource{name: string(rune('a' + i)), data: data, log: log}
				if slices.Contains(tt.failing, i+1) {
					s.fail = errDown
				}
				srcs = append(srcs, s)
			}
			log.add("first", tt.offset)
			var breaks []string
			r := NewResumer(context.Background(), Transfer{
				Body: log.body(1, data[tt.offset:]), From: "first", Offset: tt.offset, Size: tt.size, Sources: srcs, Budget: tt.budget,
				OnBreak: func(from string, off int64, err error) { breaks = append(breaks, fmt.Sprintf("%s@%d", from, off)) },
			})
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(got) != tt.wantRead || !bytes.Equal(got, data[tt.offset:tt.offset+int64(len(got))]) {
				t.Fatalf("read %d bytes, want the %d from %d", len(got), tt.wantRead, tt.offset)
			}
			if opens := log.get()[1:]; !slices.Equal(opens, tt.want) {
				t.Fatalf("opens %q, want %q", opens, tt.want)
			}
			// Every continuation was announced, from the source that broke.
			if len(breaks) != len(tt.want) {
				t.Fatalf("OnBreak calls %q, want one per continuation %q", breaks, tt.want)
			}
			if len(breaks) > 0 && !strings.HasPrefix(breaks[0], "first@") {
				t.Fatalf("first OnBreak %q, want it from the first body's source", breaks[0])
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Read(make([]byte, 1)); err == nil {
				t.Fatal("Read after Close succeeded")
			}
		})
	}
}

// TestResumerCancelled: a break after the context ended is final and not
// counted against the budget.
func TestResumerCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	log := &openLog{cut: map[int]int{1: 10}}
	data := randomBytes(2, 100)
	cancel()
	r := NewResumer(ctx, Transfer{Body: log.body(1, data), From: "a", Size: 100, Budget: 5,
		Sources: []Source{&fakeSource{name: "a", data: data, log: log}}})
	got, err := io.ReadAll(r)
	if !errors.Is(err, errCut) || errors.Is(err, ErrResume) || len(got) != 10 {
		t.Fatalf("read %d bytes, %v; want 10 and the break's error", len(got), err)
	}
	if opens := log.get(); len(opens) != 0 {
		t.Fatalf("opens %q after the context ended", opens)
	}
}

// blockingSource hands out bodies that block until closed.
type blockingSource struct {
	opened chan *io.PipeWriter
}

func (s *blockingSource) Name() string { return "blocking" }

func (s *blockingSource) Open(context.Context, int64) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	s.opened <- pw
	return pr, nil
}

// TestResumerCloseDuringRead: Close from another goroutine ends a Read in
// progress, and a body opened after Close is closed at once. Run with
// -race.
func TestResumerCloseDuringRead(t *testing.T) {
	for range 50 {
		pr, pw := io.Pipe()
		src := &blockingSource{opened: make(chan *io.PipeWriter, 1)}
		r := NewResumer(context.Background(), Transfer{Body: pr, From: src.Name(), Size: 1 << 20, Budget: 3, Sources: []Source{src}})
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, r)
			done <- err
		}()
		pw.Write([]byte("some bytes")) // the reader is in Read
		var wg sync.WaitGroup
		wg.Go(func() { r.Close() })
		wg.Go(func() { r.Close() })
		wg.Wait()
		if err := <-done; err == nil {
			t.Fatal("a Read in progress ended without an error after Close")
		}
		if _, err := r.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Read after Close = %v, want a closed error", err)
		}
	}
}

// TestResumerCloseDuringReopen: a Close racing with the opening of the
// next body leaves no body open.
func TestResumerCloseDuringReopen(t *testing.T) {
	for range 50 {
		src := &blockingSource{opened: make(chan *io.PipeWriter, 1)}
		log := &openLog{cut: map[int]int{1: 5}}
		r := NewResumer(context.Background(), Transfer{Body: log.body(1, []byte("0123456789")), From: src.Name(), Size: 10, Budget: 3,
			Sources: []Source{src}})
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, r)
			done <- err
		}()
		pw := <-src.opened // the reader is opening or reading the second body
		r.Close()
		err := <-done
		if err == nil {
			t.Fatal("the transfer completed after Close")
		}
		// The second body was closed, whichever came first: writing to it
		// fails.
		if _, werr := pw.Write([]byte("x")); werr == nil {
			t.Fatal("the body opened around Close was left open")
		}
	}
}

func TestParseRangeFrom(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"bytes=0-", 0, true},
		{"bytes=100-", 100, true},
		{RangeFrom(12345), 12345, true},
		{"bytes=0-99", 0, false},
		{"bytes=-5", 0, false},
		{"bytes=-1-", 0, false},
		{"bytes=1-,5-", 0, false},
		{"items=1-", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		if got, ok := ParseRangeFrom(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("ParseRangeFrom(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRangeFrom(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=10-", "bytes=1-2", "bytes=-1-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseRangeFrom(s)
		if !ok {
			return
		}
		if n < 0 {
			t.Fatalf("ParseRangeFrom(%q) = %d", s, n)
		}
		if m, ok := ParseRangeFrom(RangeFrom(n)); !ok || m != n {
			t.Fatalf("RangeFrom(%d) parses back as %d, %v", n, m, ok)
		}
	})
}
