package mirror

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// hangUps is how many clients hang up in the tests below: enough that a
// leak of one descriptor or connection per request stands out.
const hangUps = 40

// openFds counts the descriptors of the test process.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// serveCounted serves e's mirror on a server of its own whose handler
// returns are counted on done, also when the handler aborts the
// connection.
func serveCounted(t *testing.T, e *env, done chan<- struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		e.mirror.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// hangUp sends a GET of path, reads the status line and a little of the
// body, and closes the connection.
func hangUp(t *testing.T, srv *httptest.Server, path string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
}

// waitN waits for n values on ch, bounded so that a failing test ends.
func waitN(t *testing.T, ch <-chan struct{}, n int, what string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for i := range n {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d of %d %s after 20 s", i, n, what)
		}
	}
}

// TestHangUpsOnCachedBlobReleaseFds: clients that hang up in the middle
// of a cached blob leave no descriptor open.
func TestHangUpsOnCachedBlobReleaseFds(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(21, 8<<20)
	d := e.up.PushBlob(t, "test/app", data)
	done := make(chan struct{}, hangUps+1)
	srv := serveCounted(t, e, done)
	path := "/v2/test/app/blobs/" + d.String() + "?ns=" + e.up.Host()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	<-done
	if _, err := e.store.Stat(d); err != nil {
		t.Fatalf("not cached: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	before := openFds(t)

	for range hangUps {
		hangUp(t, srv, path)
	}
	waitN(t, done, hangUps, "handlers returned")
	// The server closes its side of each connection after the handler
	// returns, and the kernel may take a moment: poll, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for openFds(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := openFds(t); after > before {
		t.Fatalf("%d descriptors open after %d hang-ups, %d before", after, hangUps, before)
	}
}

// TestHangUpsOnUncachedStreamReleaseUpstream: a client that hangs up
// while a blob too large for the store streams to it uncached ends the
// upstream download at once, even while upstream sends nothing.
func TestHangUpsOnUncachedStreamReleaseUpstream(t *testing.T) {
	data := registrytest.Random(22, 2<<20)
	sent := make(chan struct{}, hangUps)
	released := make(chan struct{}, hangUps)
	var blobPath string
	testEnd := make(chan struct{})
	stall := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != blobPath {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:64<<10])
		w.(http.Flusher).Flush()
		sent <- struct{}{}
		select {
		case <-r.Context().Done(): // nodecache closed the connection
			released <- struct{}{}
		case <-testEnd:
		}
		return true
	}
	e := newEnvStore(t, []diskstore.Option{diskstore.WithMaxSize(1 << 20)}, nil)
	d := e.up.PushBlob(t, "test/big", data)
	blobPath = "/v2/test/big/blobs/" + d.String()
	e.up.SetFault(stall)
	done := make(chan struct{}, hangUps)
	srv := serveCounted(t, e, done)
	t.Cleanup(func() { close(testEnd) }) // runs before the servers stop

	for range hangUps {
		hangUp(t, srv, blobPath+"?ns="+e.up.Host())
	}
	waitN(t, sent, hangUps, "upstream GETs")
	waitN(t, released, hangUps, "upstream downloads ended")
	waitN(t, done, hangUps, "handlers returned")
}
