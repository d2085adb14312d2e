package blobio

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeTimers is an AfterFunc whose one timer fires when the test says.
type fakeTimers struct {
	mu      sync.Mutex // guards the fields below
	f       func()
	d       time.Duration
	resets  int
	stopped bool
	armed   bool          // started or Reset, and not Stopped since
	resetc  chan struct{} // if set, gets a value at each Reset, while it has room
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) Timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.f, ft.d = f, d
	ft.armed = true
	return ft
}

func (ft *fakeTimers) Reset(d time.Duration) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.resets++
	ft.d = d
	was := ft.armed
	ft.armed = true
	select {
	case ft.resetc <- struct{}{}:
	default:
	}
	return was
}

func (ft *fakeTimers) Stop() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.stopped = true
	was := ft.armed
	ft.armed = false
	return was
}

// advance lets the timer's window pass: like fire, but only a timer that
// is running (started or Reset, not Stopped since) goes off, as a real one
// does. It reports whether it went off.
func (ft *fakeTimers) advance() bool {
	ft.mu.Lock()
	armed := ft.armed
	ft.armed = false
	ft.mu.Unlock()
	if armed {
		ft.fire()
	}
	return armed
}

// fire runs the timer's function in its own goroutine, as a real timer
// does, and waits for it.
func (ft *fakeTimers) fire() {
	ft.mu.Lock()
	f := ft.f
	ft.mu.Unlock()
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	<-done
}

func (ft *fakeTimers) state() (resets int, stopped bool) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.resets, ft.stopped
}

func TestStallReader(t *testing.T) {
	tests := []struct {
		name      string
		stall     bool  // fire the timer while the reader waits
		end       error // how the source ends otherwise
		wantErr   error
		wantReset int
	}{
		{name: "progress then EOF", end: io.EOF, wantErr: nil, wantReset: 2},
		{name: "progress then a break", end: errCut, wantErr: errCut, wantReset: 2},
		{name: "stall", stall: true, wantErr: ErrStalled, wantReset: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fakeTimers{}
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			go func() { // a body that ends with the request's context
				<-ctx.Done()
				pw.CloseWithError(ctx.Err())
			}()
			s := NewStallReader(pr, time.Minute, cancel, ft.AfterFunc)
			defer cancel()
			result := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, s)
				result <- err
			}()
			pw.Write([]byte("abc"))
			pw.Write([]byte("def"))
			switch {
			case tt.stall:
				ft.fire()
			case tt.end == io.EOF:
				pw.Close()
			default:
				pw.CloseWithError(tt.end)
			}
			err := <-result
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !tt.stall && errors.Is(err, ErrStalled) {
				t.Fatalf("err = %v: not a stall", err)
			}
			if resets, _ := ft.state(); resets != tt.wantReset {
				t.Errorf("timer reset %d times, want %d (once per Read after the first)", resets, tt.wantReset)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, stopped := ft.state(); !stopped {
				t.Error("Close did not stop the timer")
			}
		})
	}
}

// TestStallReaderRealTimer: with real timers, a source that sends
// nothing is ended with ErrStalled, and one that keeps sending is not.
func TestStallReaderRealTimer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		<-ctx.Done()
		pw.CloseWithError(ctx.Err())
	}()
	s := NewStallReader(pr, 20*time.Millisecond, cancel, nil)
	defer s.Close()
	_, err := io.Copy(io.Discard, s)
	if !errors.Is(err, ErrStalled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrStalled wrapping the cancellation", err)
	}
}

// TestStallReaderTimesOnlyRead: the window counts only while a Read waits
// for the source. A consumer that pauses between Reads for longer than the
// window (a slow client, a writer held up downstream) is not cut; a Read
// that waits longer than the window is.
func TestStallReaderTimesOnlyRead(t *testing.T) {
	ft := &fakeTimers{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	go func() { // a body that ends with the request's context
		<-ctx.Done()
		pw.CloseWithError(ctx.Err())
	}()
	s := NewStallReader(pr, time.Minute, cancel, ft.AfterFunc)
	defer s.Close()
	read := func() (string, error) {
		got := make(chan string, 1)
		errc := make(chan error, 1)
		go func() {
			buf := make([]byte, 16)
			n, err := s.Read(buf)
			got <- string(buf[:n])
			errc <- err
		}()
		return <-got, <-errc
	}
	go pw.Write([]byte("abc"))
	if b, err := read(); b != "abc" || err != nil {
		t.Fatalf("first Read = %q, %v", b, err)
	}
	// The consumer is busy elsewhere for longer than the window.
	if ft.advance() {
		t.Error("the timer ran while no Read was waiting")
	}
	go pw.Write([]byte("def"))
	if b, err := read(); b != "def" || err != nil {
		t.Fatalf("Read after a pause between Reads = %q, %v; want the bytes", b, err)
	}
	// Now a Read waits and the source sends nothing for the window.
	ft.mu.Lock()
	ft.resetc = make(chan struct{}, 1)
	ft.mu.Unlock()
	result := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 16))
		result <- err
	}()
	<-ft.resetc // the Read has armed the timer
	if !ft.advance() {
		t.Fatal("the timer was not running while a Read waited")
	}
	if err := <-result; !errors.Is(err, ErrStalled) {
		t.Fatalf("blocked Read: err = %v, want ErrStalled", err)
	}
}
