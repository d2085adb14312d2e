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
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) Timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.f, ft.d = f, d
	return ft
}

func (ft *fakeTimers) Reset(d time.Duration) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.resets++
	ft.d = d
	return true
}

func (ft *fakeTimers) Stop() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.stopped = true
	return true
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
				t.Errorf("timer reset %d times, want %d (once per read with bytes)", resets, tt.wantReset)
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
