package fastlane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// safety bounds every wait of a test: a test that would otherwise hang
// fails after it. It is never what a test measures.
const safety = 10 * time.Second

// fixedDate is the Date the tests' handlers set, so that an answer's
// bytes are known exactly: a handler's Date is kept, in the loop as in
// net/http.
const fixedDate = "Wed, 02 Dec 2026 12:00:00 GMT"

// testLane is a Server serving a listener on 127.0.0.1, stopped when the
// test ends.
type testLane struct {
	*Server
	addr string
	log  *syncBuffer
	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned, once done is closed
}

// startLane serves fast in the loop for the paths under /fast/, and next
// behind it. configure, if any, changes the Server before it serves.
func startLane(t *testing.T, fast, next http.Handler, configure ...func(*Server)) *testLane {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	tl := &testLane{
		Server: &Server{
			Handler: fast,
			Pick:    pickFast,
			Next:    newNext(next),
			Log:     slog.New(slog.NewTextHandler(log, nil)),
		},
		addr: l.Addr().String(),
		log:  log,
		done: make(chan struct{}),
	}
	for _, f := range configure {
		f(tl.Server)
	}
	go func() {
		tl.err = tl.Serve(l)
		close(tl.done)
	}()
	t.Cleanup(func() {
		tl.Next.Close()
		tl.Close()
		tl.serveErr(t)
	})
	return tl
}

func pickFast(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/fast/") }

func newNext(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
}

// serveErr waits for Serve to return and returns its error.
func (tl *testLane) serveErr(t *testing.T) error {
	t.Helper()
	select {
	case <-tl.done:
		return tl.err
	case <-time.After(safety):
		t.Fatal("Serve did not return")
		return nil
	}
}

// syncBuffer is a log's output, written and read concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// routes is a handler by exact path; any other path gets fastAnswer.
type routes map[string]http.HandlerFunc

func (rs routes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := rs[r.URL.Path]; ok {
		h(w, r)
		return
	}
	serveFast(w, r)
}

// serveFast answers "fast METHOD PATH" with its Content-Length.
func serveFast(w http.ResponseWriter, r *http.Request) {
	body := fastBody(r.Method, r.URL.Path)
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Date", fixedDate)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

func fastBody(method, path string) string { return "fast " + method + " " + path }

// fastAnswer is the exact answer of serveFast: the body is left out for
// HEAD, the Content-Length is the GET's.
func fastAnswer(method, path string) string {
	body := fastBody(method, path)
	s := "HTTP/1.1 200 OK\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Content-Type: text/plain\r\n" +
		"Date: " + fixedDate + "\r\n\r\n"
	if method == http.MethodHead {
		return s
	}
	return s + body
}

// serveNext is the handler behind the loop: it reads the whole body and
// answers, in its X-Next header and its body, what it received.
func serveNext(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s := nextSummary(r.Method, r.URL.Path, string(body), len(r.Header.Get("X-Big")))
	w.Header().Set("X-Next", s)
	io.WriteString(w, s)
}

func nextSummary(method, path, body string, big int) string {
	return fmt.Sprintf("next %s %s body=%q big=%d", method, path, body, big)
}

// getReq is a request head for path, with extra header lines.
func getReq(path string, headers ...string) string { return reqHead("GET", path, headers...) }

func reqHead(method, path string, headers ...string) string {
	s := method + " " + path + " HTTP/1.1\r\nHost: example\r\n"
	for _, h := range headers {
		s += h + "\r\n"
	}
	return s + "\r\n"
}

// rawClient is a raw connection to a test server.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := dialConn(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func dialConn(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(safety))
	return c, nil
}

// send writes the strings in one write.
func (c *rawClient) send(s ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, strings.Join(s, "")); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads len(want) bytes and checks they are want.
func (c *rawClient) expect(want string) {
	c.t.Helper()
	if err := expectBytes(c.br, want); err != nil {
		c.t.Fatal(err)
	}
}

func expectBytes(br *bufio.Reader, want string) error {
	got := make([]byte, len(want))
	n, err := io.ReadFull(br, got)
	if err != nil {
		return fmt.Errorf("read %q, then %v; want %q", got[:n], err, want)
	}
	if string(got) != want {
		return fmt.Errorf("read\n%q\nwant\n%q", got, want)
	}
	return nil
}

// response reads an answer to a request of method, and its whole body.
func (c *rawClient) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, body, err := readResponse(c.br, method)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, body
}

func readResponse(br *bufio.Reader, method string) (*http.Response, string, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, "", fmt.Errorf("reading the answer's head: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, "", fmt.Errorf("reading the answer's body: %w (read %q)", err, body)
	}
	return resp, string(body), nil
}

// expectEOF checks the server closed the connection with nothing more
// sent.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	rest, err := io.ReadAll(c.br)
	if err != nil || len(rest) > 0 {
		c.t.Fatalf("read %q, then %v; want the connection closed (EOF)", rest, err)
	}
}

// expectNext checks the next answer on c is serveNext's, to a request it
// received as want.
func (c *rawClient) expectNext(method, want string) {
	c.t.Helper()
	resp, body := c.response(method)
	if got := resp.Header.Get("X-Next"); got != want {
		c.t.Fatalf("answer %s %q %q: not Next's answer to %q", resp.Status, resp.Header, body, want)
	}
	if method != http.MethodHead && body != want {
		c.t.Fatalf("Next's body %q, want %q", body, want)
	}
}

// waitFor receives from ch, or fails the test when it takes longer than
// safety.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(safety):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func shutdownNext(t *testing.T, s *http.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Next.Shutdown: %v", err)
	}
}

func isServerClosed(err error) bool { return errors.Is(err, http.ErrServerClosed) }
