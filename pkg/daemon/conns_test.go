package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// within waits for ch, failing the test after a generous bound.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// serveBounded serves h on a boundedListener on 127.0.0.1.
func serveBounded(t *testing.T, h http.Handler, maxConns int, progress time.Duration) *boundedListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bl := newBoundedListener(l, maxConns, progress)
	srv := &http.Server{Handler: h}
	go srv.Serve(bl)
	t.Cleanup(func() { srv.Close() })
	return bl
}

// TestStalledClientCut: a client that stops reading has its connection
// cut once a write has waited the progress timeout, whether the body goes
// out by writes or, from a file, by sendfile.
func TestStalledClientCut(t *testing.T) {
	const size = 64 << 20 // far more than the socket buffers hold
	file := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		name string
		copy func(w io.Writer) error
	}{
		{"writes", func(w io.Writer) error {
			buf := make([]byte, 32<<10)
			for range size / len(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
			return nil
		}},
		{"sendfile", func(w io.Writer) error {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(w, io.LimitReader(f, size)) // reaches the connection's ReadFrom
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := make(chan error, 1)
			bl := serveBounded(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(size))
				failed <- tc.copy(w)
			}), 4, 200*time.Millisecond)
			c, err := net.Dial("tcp", bl.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
				t.Fatal(err)
			}
			// The client reads no more.
			err = within(t, failed, "the write to the stalled client to fail")
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("copy to a stalled client: %v, want a deadline error", err)
			}
		})
	}
}

// TestReadingClientNotCut: a client that reads a body whose copy takes
// far longer than the progress timeout gets all of it.
func TestReadingClientNotCut(t *testing.T) {
	const chunks = 20
	next := make(chan struct{})
	bl := serveBounded(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for range chunks {
			<-next // the client asks for each chunk once it read the last
			w.Write(make([]byte, 1<<10))
			w.(http.Flusher).Flush()
		}
	}), 4, 50*time.Millisecond)
	resp, err := http.Get("http://" + bl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for i := range chunks {
		// Wait out the progress timeout between writes: the deadline
		// covers one write, not the time between them.
		time.Sleep(60 * time.Millisecond)
		next <- struct{}{}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
}

// TestConnectionCap: with room for one connection, a second is accepted
// only once the first closes.
func TestConnectionCap(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bl := newBoundedListener(l, 1, 0)
	full := make(chan struct{}, 1)
	bl.onFull = func() { full <- struct{}{} }
	defer bl.Close()

	c1, err := net.Dial("tcp", bl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("tcp", bl.Addr().String()) // queued by the kernel
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := bl.Accept()
		if err == nil {
			accepted <- s
		}
	}()
	within(t, full, "Accept to wait for a slot")
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted beyond the cap")
	default:
	}
	s1.Close()
	s2 := within(t, accepted, "the second connection once the first closed")
	s2.Close()

	// Close ends an Accept that waits for a slot.
	c3, err := net.Dial("tcp", bl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	s3, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := bl.Accept()
		ended <- err
	}()
	within(t, full, "Accept to wait for a slot")
	bl.Close()
	if err := within(t, ended, "Accept to end on Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// TestWriteDeadlineMovedOncePerSlack: back-to-back writes move the write
// deadline once, not once each (each move is a runtime timer's).
func TestWriteDeadlineMovedOncePerSlack(t *testing.T) {
	conn := &deadlineCounter{}
	c := &boundedConn{Conn: conn, progress: time.Hour, release: func() {}} // slack: a minute
	for range 100 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if conn.sets != 1 {
		t.Fatalf("100 writes within the slack set the deadline %d times, want 1", conn.sets)
	}
	c.deadline.Store(c.deadline.Load() - int64(2*time.Minute)) // as if set two minutes ago
	c.Write([]byte("x"))
	if conn.sets != 2 {
		t.Fatalf("a write after the slack set the deadline %d times in all, want 2", conn.sets)
	}
}

// deadlineCounter is a net.Conn that takes every write and counts the
// write deadlines set on it.
type deadlineCounter struct {
	net.Conn
	sets int
}

func (c *deadlineCounter) Write(p []byte) (int, error)      { return len(p), nil }
func (c *deadlineCounter) SetWriteDeadline(time.Time) error { c.sets++; return nil }
