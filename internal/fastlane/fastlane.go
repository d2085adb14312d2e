// Package fastlane serves the connections of a listener with a lean
// HTTP/1.1 loop for the requests a predicate picks, and hands a
// connection to a net/http server, with the bytes already read, at the
// first request it does not pick.
//
// The picked requests are answers that take microseconds (a cached
// manifest). For them, net/http's own work per request (a goroutine that
// watches the connection, a context, a response and its buffers) cost
// more than the answer: a bare net/http handler reached 0.69× of nginx
// serving the same bytes as a static file, the same handler in this loop
// 1.0× (wrk c=32, 2026-12-02, 2 vCPU Xeon VM).
//
// What the loop takes is narrow, and anything else goes to net/http,
// which answers it as it always would, errors included:
//   - HTTP/1.1 GET and HEAD without a body, in the plain form registry
//     clients send (parseHead), in a head that fits in headBufSize;
//   - and that the predicate picks.
//
// Once handed off, a connection stays with net/http. A head the loop
// takes is read as net/http reads it (FuzzParseHead compares the two),
// and headers are written by http.Header.Write. A picked request's
// handler is the same http.Handler; its ResponseWriter frames the answer
// by its Content-Length, or chunked, and supports Flush. Unlike net/http,
// the loop does not watch the connection while the handler runs: a
// request's context ends when a write to its client fails or the
// connection ends, not as soon as the client hangs up, and not when the
// handler returns. The predicate should pick answers that do not wait
// long. Next's Shutdown begins the loop's too (RegisterOnShutdown).
package fastlane

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// headBufSize is the read buffer of a connection, and the largest request
// head the loop parses: a registry client's is a few hundred bytes. A
// larger head goes to net/http, which allows up to its MaxHeaderBytes.
const headBufSize = 4 << 10

// writeBufSize is the write buffer of a connection: a cached manifest's
// answer (headers and a body of a few KiB) leaves in one write.
const writeBufSize = 8 << 10

// Server serves connections in the loop and hands the others to Next.
type Server struct {
	// Handler answers the picked requests.
	Handler http.Handler
	// Pick reports whether the loop answers r. It must not read r.Body.
	Pick func(r *http.Request) bool
	// Next serves every connection handed off. Its ReadHeaderTimeout,
	// IdleTimeout and BaseContext apply in the loop too. Shutdown and
	// Close of Next close the listeners Serve was given.
	Next *http.Server
	// Log takes what net/http would write to its ErrorLog: a handler's
	// panic. Nil is slog.Default().
	Log *slog.Logger

	hook    sync.Once // registers beginShutdown with Next
	mu      sync.Mutex
	conns   map[*conn]struct{}
	idle    chan struct{} // closed when conns empties while closing
	closing atomic.Bool
}

// Serve accepts connections on l and serves them until Next is shut down
// or closed, which closes l. It returns what Next.Serve returns:
// http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.hook.Do(func() { s.Next.RegisterOnShutdown(s.beginShutdown) })
	h := newHandoff(l)
	base := context.Background()
	if s.Next.BaseContext != nil {
		base = s.Next.BaseContext(h)
	}
	served := make(chan error, 1)
	go func() {
		err := s.Next.Serve(h)
		h.Close() // Next may return without closing h: shut down before it served
		served <- err
	}()
	var delay time.Duration // as net/http backs off a failing Accept
	for {
		rwc, err := l.Accept()
		if err != nil {
			if h.closed() { // Next shut down
				return <-served
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() { // out of files, say
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			h.Close()
			<-served
			return err
		}
		delay = 0
		c := &conn{s: s, rwc: rwc, handoff: h}
		if !s.track(c) {
			rwc.Close()
			continue
		}
		go c.serve(base)
	}
}

// track adds c to the connections served, unless the server is closing.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// beginShutdown closes the connections waiting for a request, and makes
// each of the others close once its answer is out (with Connection:
// close). Next runs it as its Shutdown begins, as net/http closes its
// own idle connections then.
func (s *Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for c := range s.conns {
		c.wake()
	}
}

// Shutdown begins the shutdown (beginShutdown), if Next's has not, and
// returns when no connection is left, or with ctx's error when ctx ends
// first. It does not stop Serve: Next's Shutdown does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every connection of the loop at once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for c := range s.conns {
		c.rwc.Close()
	}
}

// conn is a connection served in the loop.
type conn struct {
	s       *Server
	rwc     net.Conn
	handoff *handoff
	br      *bufio.Reader
	bw      *bufio.Writer
	remote  string
	cancel  context.CancelCauseFunc // ends the requests' context: the connection failed or ended
	resp    response                // the answer being written; one per connection
	header  http.Header             // resp's, cleared for each answer
	// setAt is when the read deadline was set last, and idle whether it
	// was a wait for the next request (idle timeout).
	setAt time.Time
	idle  bool
	// headDeadline is the header deadline of the head being read, zero
	// if none was set for it: a head handed off keeps it.
	headDeadline time.Time
}

// deadlineSlackDivisor sets how stale an idle deadline may be before a
// new wait moves it: by its timeout/deadlineSlackDivisor, two seconds of
// net/http's two-minute idle timeout. Moving a deadline moves a runtime
// timer, 4% of a cached manifest's answer when done twice per request.
const deadlineSlackDivisor = 60

// wake makes a read waiting for the next request return at once, so that
// the loop sees the server closing.
func (c *conn) wake() { c.rwc.SetReadDeadline(time.Unix(1, 0)) }

// serve answers picked requests until one is not picked, which hands the
// connection off, or the connection ends.
func (c *conn) serve(base context.Context) {
	handed := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.logPanic(v)
		}
		c.s.forget(c)
		if !handed {
			c.rwc.Close()
		}
	}()
	ctx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	c.cancel = cancel
	c.br = bufio.NewReaderSize(c.rwc, headBufSize)
	c.header = make(http.Header, 8)
	c.bw = bufio.NewWriterSize(c.rwc, writeBufSize)
	if a := c.rwc.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	for first := true; ; first = false {
		head, whole, ok := c.readHead(first)
		if !ok {
			return
		}
		var r *http.Request
		if whole {
			if r = parseHead(ctx, head); r != nil {
				r.RemoteAddr = c.remote
			}
		}
		if r == nil || !c.s.Pick(r) {
			c.s.forget(c) // before Next has it: Shutdown must not wake it
			handed = true
			c.handoff.give(c.rwc, c.br, c.headDeadline)
			return
		}
		c.br.Discard(len(head))
		if !c.answer(r) {
			return
		}
	}
}

// readHead waits for the next request's head, within the idle timeout
// (the header timeout for the first), then for all of it within the
// header timeout. It returns the head, buffered and not consumed; whole is
// false if it did not fit in the buffer or did not parse as lines. ok is
// false when the connection is to close: it ended, timed out, or the
// server is closing and no request has begun.
func (c *conn) readHead(first bool) (head []byte, whole, ok bool) {
	if c.s.closing.Load() { // a pipelined head waits in the buffer
		return nil, false, false
	}
	next := c.s.Next
	headerWait := cmp.Or(next.ReadHeaderTimeout, next.ReadTimeout)
	headerSet := false // the header deadline is set for this head
	c.headDeadline = time.Time{}
	if c.br.Buffered() == 0 {
		idleWait := cmp.Or(next.IdleTimeout, next.ReadTimeout)
		var open bool
		if first || idleWait == 0 {
			open, headerSet = c.setHeaderDeadline(headerWait), true
		} else {
			open = c.setReadDeadline(idleWait, true)
		}
		if !open {
			return nil, false, false
		}
		if _, err := c.br.Peek(1); err != nil {
			return nil, false, false
		}
	}
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if end := headEnd(buf); end > 0 {
			return buf[:end], true, true
		}
		if len(buf) == headBufSize || !mayTake(buf) {
			return nil, false, true
		}
		// The head is not all here: the rest must come within the
		// header timeout, which a head that came whole never waits for.
		if !headerSet {
			if !c.setHeaderDeadline(headerWait) {
				return nil, false, false
			}
			headerSet = true
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, false, false
		}
	}
}

// setReadDeadline sets the read deadline d from now (none for 0), and
// reports false if the server is closing. An idle wait keeps the idle
// deadline set last while it is younger than d/deadlineSlackDivisor.
// Set, or kept, before the check, a deadline is either moved to the past
// by Shutdown's wake or sees Shutdown's flag.
func (c *conn) setReadDeadline(d time.Duration, idle bool) bool {
	now := time.Now()
	if !idle || !c.idle || now.Sub(c.setAt) >= d/deadlineSlackDivisor {
		var t time.Time
		if d > 0 {
			t = now.Add(d)
		}
		c.rwc.SetReadDeadline(t)
		c.setAt, c.idle = now, idle
	}
	return !c.s.closing.Load()
}

// setHeaderDeadline is setReadDeadline for the head being read, whose
// deadline a handoff keeps (headDeadline).
func (c *conn) setHeaderDeadline(d time.Duration) bool {
	open := c.setReadDeadline(d, false)
	if d > 0 {
		c.headDeadline = c.setAt.Add(d)
	}
	return open
}

// mayTake reports whether buf, the start of a request, may begin a head
// the loop takes. Anything else goes to net/http at once, without waiting
// for a head that may never come: a TLS client's hello, which net/http
// answers with a 400 that ends the client's handshake, waits for the
// server to speak first.
func mayTake(buf []byte) bool {
	for _, start := range [...]string{"GET /", "HEAD /"} {
		n := min(len(buf), len(start))
		if string(buf[:n]) == start[:n] {
			return true
		}
	}
	return false
}

// headEnd returns the length of the request head at the start of buf,
// through the empty line that ends it, or 0 if buf holds no empty line.
// Lines end in LF, with or without CR, as net/http reads them.
func headEnd(buf []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(buf) && buf[i] == '\n':
			return i + 1
		case i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n':
			return i + 2
		}
	}
}

// answer runs the handler for r and finishes its answer. It reports
// whether the connection can carry another request. A panic in the
// handler closes the connection (serve recovers it), as in net/http:
// panic(http.ErrAbortHandler) is how a handler aborts an answer.
func (c *conn) answer(r *http.Request) bool {
	clear(c.header)
	c.resp = response{c: c, req: r, header: c.header, length: -1}
	c.s.Handler.ServeHTTP(&c.resp, r)
	return c.resp.finish()
}

// logPanic logs a panic of the handler, or of Pick, with its stack, as
// net/http does.
func (c *conn) logPanic(v any) {
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	log := c.s.Log
	if log == nil {
		log = slog.Default()
	}
	log.Error("panic serving", "remote", c.remote, "panic", v, "stack", string(buf))
}

// handoff is the listener Next serves: it yields the connections the loop
// hands off. Closing it closes the listener the loop accepts from.
type handoff struct {
	inner net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(l net.Listener) *handoff {
	return &handoff{inner: l, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	err := net.ErrClosed
	h.once.Do(func() {
		close(h.done)
		err = h.inner.Close()
	})
	return err
}

func (h *handoff) Addr() net.Addr { return h.inner.Addr() }

func (h *handoff) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// give hands rwc to Next, with what br has read from it and not consumed,
// or closes it if Next has stopped.
//
// A head the loop began to wait for keeps its header deadline, limit:
// Next's own header timeout, which it sets first, cannot extend it, so a
// client trickling a head is cut at one timeout, not two.
func (h *handoff) give(rwc net.Conn, br *bufio.Reader, limit time.Time) {
	rwc.SetReadDeadline(limit) // zero: none until Next sets its own
	var pending []byte
	if n := br.Buffered(); n > 0 {
		buf, _ := br.Peek(n)
		pending = bytes.Clone(buf)
	}
	select {
	case h.conns <- &replayConn{Conn: rwc, pending: pending, limit: limit}:
	case <-h.done:
		rwc.Close()
	}
}

// replayConn is a connection handed off: its reads return the bytes the
// loop read first. It keeps the connection's ReadFrom, which net/http
// uses for sendfile, and CloseWrite, which it uses to close gracefully.
type replayConn struct {
	net.Conn
	pending []byte
	limit   time.Time // caps the first read deadline Next sets; zero: none
}

// SetReadDeadline sets the connection's read deadline, the first one no
// later than limit.
func (c *replayConn) SetReadDeadline(t time.Time) error {
	if !c.limit.IsZero() {
		if t.IsZero() || t.After(c.limit) {
			t = c.limit
		}
		c.limit = time.Time{}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *replayConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// writerOnly hides a writer's ReadFrom, so io.Copy does not call it back.
type writerOnly struct{ io.Writer }
