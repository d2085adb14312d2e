package mirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/registrytest"
)

// TestAccessLogFields: every access line says what was pulled and from
// where: the registry, the repository, the reference the path gave and
// the digest served, which for a tag is the digest it resolved to.
func TestAccessLogFields(t *testing.T) {
	e := newTwoUp(t)
	img := e.up.PushImage(t, "demo/app", "v1", 3000)
	layer := img.Layers["linux/amd64"][0].String()
	tests := []struct {
		name, method, path         string
		status                     int
		route, registry, repo, ref string
		digest                     string
	}{
		{"tag", "GET", "/v2/up.test/demo/app/manifests/v1", 200, "manifests", "up.test", "demo/app", "v1", img.Index.String()},
		{"tag, HEAD, ns", "HEAD", "/v2/demo/app/manifests/v1?ns=up.test", 200, "manifests", "up.test", "demo/app", "v1", img.Index.String()},
		{"manifest by digest", "GET", "/v2/up.test/demo/app/manifests/" + img.Index.String(), 200, "manifests", "up.test", "demo/app", img.Index.String(), img.Index.String()},
		{"blob", "GET", "/v2/up.test/demo/app/blobs/" + layer, 200, "blobs", "up.test", "demo/app", layer, layer},
		{"blob, HEAD", "HEAD", "/v2/up.test/demo/app/blobs/" + layer, 200, "blobs", "up.test", "demo/app", layer, layer},
		{"unknown blob", "GET", "/v2/up.test/demo/app/blobs/" + zeroDigest, 404, "blobs", "up.test", "demo/app", zeroDigest, zeroDigest},
		{"unknown tag", "GET", "/v2/up.test/demo/app/manifests/nope", 404, "manifests", "up.test", "demo/app", "nope", ""},
		{"tags/list", "GET", "/v2/up.test/demo/app/tags/list", 200, "tags", "up.test", "demo/app", "", ""},
		{"not allowed", "GET", "/v2/evil.test/demo/app/manifests/v1", 403, "manifests", "evil.test", "demo/app", "v1", ""},
		{"base", "GET", "/v2/", 200, "base", "", "", "", ""},
		{"invalid", "GET", "/v2/Demo/manifests/v1", 400, "invalid", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, e.srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json")
			resp, _ := send(t, req)
			within(t, e.served, "the handler's return")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			line := e.log.last(t)
			want := map[string]string{"method": tt.method, "route": tt.route, "registry": tt.registry, "repository": tt.repo,
				"reference": tt.ref, "digest": tt.digest, "status": strconv.Itoa(tt.status)}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %q, want %q", k, line[k], v)
				}
			}
		})
	}
}

const zeroDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// TestHangUpIsCanceled: a client that hangs up before its answer is
// complete, waiting for upstream's headers or in the middle of the body,
// is logged and counted as 499 canceled, never as an error.
func TestHangUpIsCanceled(t *testing.T) {
	tests := []struct {
		name  string
		fault func(up *registrytest.Registry, g *registrytest.Gate, match func(*http.Request) bool) registrytest.Fault
		read  int // bytes the client reads before it hangs up; 0: it has no headers
	}{
		{"waiting for upstream", func(up *registrytest.Registry, g *registrytest.Gate, m func(*http.Request) bool) registrytest.Fault {
			return up.NoHeaders(g, m)
		}, 0},
		{"in the body", func(up *registrytest.Registry, g *registrytest.Gate, m func(*http.Request) bool) registrytest.Fault {
			return up.Stall(64<<10, g, m)
		}, 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTwoUp(t)
			d := e.up.PushBlob(t, "demo/app", registrytest.Random(31, 1<<20))
			// Never released: the mirror's Close ends the held fetch, so no
			// fill writes into the store while the test's directory goes.
			gate := registrytest.NewGate()
			e.up.SetFault(tt.fault(e.up, gate, registrytest.Route(http.MethodGet, registrytest.KindBlobs)))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/up.test/demo/app/blobs/"+d.String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			answered := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadFull(resp.Body, make([]byte, tt.read))
					cancel() // hang up in the middle of the body
					resp.Body.Close()
				}
				answered <- err
			}()
			waitCtx, stop := context.WithTimeout(context.Background(), 20*time.Second)
			defer stop()
			if err := gate.WaitHeld(waitCtx, 1); err != nil {
				t.Fatalf("upstream's GET never reached its hold: %v", err)
			}
			if tt.read == 0 {
				cancel() // hang up before any header
			}
			if err := <-answered; tt.read > 0 && err != nil {
				t.Fatalf("client read: %v", err)
			} else if tt.read == 0 && !errors.Is(err, context.Canceled) {
				t.Fatalf("client got %v, want its own cancellation", err)
			}
			within(t, e.served, "the handler's return")
			line := e.log.last(t)
			if line["status"] != "499" || line["registry"] != "up.test" || line["digest"] != d.String() {
				t.Fatalf("access line %v, want status 499 for up.test's %s", line, d)
			}
			canceled := testutil.ToFloat64(e.metrics.requests.WithLabelValues("blobs", resultCanceled))
			failed := testutil.ToFloat64(e.metrics.requests.WithLabelValues("blobs", resultError))
			if canceled != 1 || failed != 0 {
				t.Fatalf("requests{result=canceled} = %v, {result=error} = %v; want 1 and 0", canceled, failed)
			}
		})
	}
}

// TestServerAbortIsNotCanceled: an answer the server cuts short itself,
// because upstream sent bytes that do not match the digest, is no hang-up
// of the client: it is never logged 499 or counted canceled.
func TestServerAbortIsNotCanceled(t *testing.T) {
	e := newTwoUp(t)
	data := registrytest.Random(32, 256<<10)
	d := e.up.PushBlob(t, "demo/app", data)
	// Upstream sends the first half and holds the rest until the client
	// has its headers, so the client is sure to be streaming the fill
	// when the wrong byte (in the second half) fails it: were the fill
	// to fail first, the client would get a 502 answer, not a cut one.
	half := int64(len(data)) / 2
	gate := registrytest.NewGate()
	stall := e.up.Stall(half, gate, registrytest.Route(http.MethodGet, registrytest.KindBlobs))
	e.up.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		return stall(&flipByte{ResponseWriter: w, at: half + 1}, req)
	})

	resp, err := http.Get(e.srv.URL + "/v2/up.test/demo/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 and a body cut short", resp.StatusCode)
	}
	gate.Release()
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("the client got a whole answer from wrong bytes")
	}
	within(t, e.served, "the handler's return")
	if line := e.log.last(t); line["status"] == "499" || line["digest"] != d.String() {
		t.Fatalf("access line %v, want %s and a status other than 499", line, d)
	}
	if n := testutil.ToFloat64(e.metrics.requests.WithLabelValues("blobs", resultCanceled)); n != 0 {
		t.Fatalf("requests{result=canceled} = %v, want 0", n)
	}
}

// connWriter is a ResponseWriter on a connection that takes everything
// (err nil) or fails every write with err. Its ReadFrom, as net/http's,
// reads from src before it writes, and keeps src.
type connWriter struct {
	http.ResponseWriter
	err error
	src io.Reader
}

func (w *connWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *connWriter) ReadFrom(src io.Reader) (int64, error) {
	w.src = src
	if w.err == nil {
		return io.Copy(io.Discard, src)
	}
	if _, err := src.Read(make([]byte, 512)); err != nil && err != io.EOF {
		return 0, err
	}
	return 0, w.err
}

// TestRecorderTellsWhoseCopyFailed: a copy to the client that fails is
// the client's (writeFailed) when the write failed, never when the source
// did; and a file, whole or in part, still reaches the connection as it
// is, so that it goes out by sendfile.
func TestRecorderTellsWhoseCopyFailed(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "blob")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("some bytes of a blob"); err != nil {
		t.Fatal(err)
	}
	errConn, errSource := errors.New("connection reset by peer"), errors.New("upstream cut")
	tests := []struct {
		name       string
		src        func() io.Reader
		conn       error
		wantFailed bool
		sendfile   bool // the connection must get src itself
	}{
		// copyBody sends a stored file as part of itself, an
		// io.LimitReader: a bare *os.File would go by its WriteTo.
		{"file sent", func() io.Reader { return io.LimitReader(f, 20) }, nil, false, true},
		{"file, the client hung up", func() io.Reader { return io.LimitReader(f, 20) }, errConn, true, true},
		{"stream sent", func() io.Reader { return strings.NewReader("abc") }, nil, false, false},
		{"stream, the client hung up", func() io.Reader { return strings.NewReader("abc") }, errConn, true, false},
		{"stream, the source failed", func() io.Reader { return iotest.ErrReader(errSource) }, errConn, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			conn := &connWriter{ResponseWriter: httptest.NewRecorder(), err: tt.conn}
			rec := &recorder{ResponseWriter: conn}
			src := tt.src()
			_, err := io.Copy(rec, src)
			if (err != nil) != (tt.conn != nil) {
				t.Fatalf("copy: %v", err)
			}
			if rec.writeFailed != tt.wantFailed {
				t.Fatalf("writeFailed = %v, want %v (copy error %v)", rec.writeFailed, tt.wantFailed, err)
			}
			if tt.sendfile && conn.src != src {
				t.Fatalf("the connection got %T, want the %T itself", conn.src, src)
			}
		})
	}
}

// TestHalfClosedClientGetsNoEmptyOK: net/http takes a client that shuts
// its side of the connection after its request for gone and cancels the
// request, yet such a client may still read the answer. Whatever the
// access log calls it, the answer it reads must not be an empty 200 in
// place of the blob.
func TestHalfClosedClientGetsNoEmptyOK(t *testing.T) {
	e := newTwoUp(t)
	d := e.up.PushBlob(t, "demo/app", registrytest.Random(33, 1<<20))
	// Never released: the mirror's Close ends the held fetch.
	e.up.SetFault(e.up.NoHeaders(registrytest.NewGate(), registrytest.Route(http.MethodGet, registrytest.KindBlobs)))

	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v2/up.test/demo/app/blobs/%s HTTP/1.1\r\nHost: x\r\n\r\n", d)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil && resp.StatusCode < 300 {
		t.Fatalf("a half-closed client got %d with Content-Length %d for a blob it was not sent", resp.StatusCode, resp.ContentLength)
	}
	within(t, e.served, "the handler's return")
}

// flipByte is a ResponseWriter that inverts the byte of the body at
// offset at, as a corrupting upstream would.
type flipByte struct {
	http.ResponseWriter
	at, off int64
}

func (w *flipByte) Write(p []byte) (int, error) {
	if i := w.at - w.off; i >= 0 && i < int64(len(p)) {
		p = append([]byte(nil), p...)
		p[i] ^= 0xff
	}
	n, err := w.ResponseWriter.Write(p)
	w.off += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *flipByte) Unwrap() http.ResponseWriter { return w.ResponseWriter }
