package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// gate holds upstream blob GETs until it is opened, so tests can line up
// concurrent clients behind one fill without sleeping.
type gate struct {
	open    chan struct{}
	arrived chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{open: make(chan struct{}), arrived: make(chan struct{}, 64)} }

func (g *gate) fault(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet && bytes.Contains([]byte(r.URL.Path), []byte("/blobs/sha256:")) {
		g.arrived <- struct{}{}
		<-g.open
	}
	return false
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// TestConcurrentColdGetsFetchOnce is the single-fetch promise: 32 clients
// asking for one missing 32 MiB blob from a slow upstream cause exactly
// one upstream GET, every client gets the right bytes, and every client
// gets its first bytes while the fill is still in progress.
func TestConcurrentColdGetsFetchOnce(t *testing.T) {
	const clients = 32
	g := newGate()
	e := newEnv(t, []registrytest.Option{registrytest.WithThrottle(48 << 20), registrytest.WithFault(g.fault)})
	data := registrytest.Random(1, 32<<20)
	d := e.up.PushBlob(t, "test/big", data)
	e.up.ResetCounts()

	var streamedBeforeCommit atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(e.url("/v2/test/big/blobs/" + d.String()))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				errs <- err
				return
			}
			if _, err := e.store.Stat(d); errors.Is(err, diskstore.ErrNotFound) {
				streamedBeforeCommit.Add(1)
			}
			// Hash as we read: 32 clients holding 32 MiB each would cost
			// more than the test itself.
			h := digest.SHA256.Digester()
			h.Hash().Write(first)
			if _, err := io.Copy(h.Hash(), resp.Body); err != nil {
				errs <- err
				return
			}
			if resp.StatusCode != 200 || h.Digest() != d {
				errs <- fmt.Errorf("status %d, digest %s, want 200 %s", resp.StatusCode, h.Digest(), d)
			}
		})
	}
	for range clients {
		<-e.arrived // every client is waiting on nodecache
	}
	<-g.arrived // and the one fill is waiting on upstream
	g.release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.up.BlobGets(d); n != 1 {
		t.Fatalf("upstream saw %d GETs of the blob, want 1", n)
	}
	if n := streamedBeforeCommit.Load(); n != clients {
		t.Fatalf("%d of %d clients got their first bytes before the fill ended", n, clients)
	}
	// Warm: served from the store, upstream untouched.
	resp, body := e.do(http.MethodGet, e.url("/v2/test/big/blobs/"+d.String()), nil)
	if resp.StatusCode != 200 || digest.FromBytes(body) != d || e.up.BlobGets(d) != 1 {
		t.Fatalf("warm GET: status %d, upstream GETs %d", resp.StatusCode, e.up.BlobGets(d))
	}
}

// TestClientHangUpDoesNotCancelFill checks that the first client leaving
// does not stop the fill the others are waiting on.
func TestClientHangUpDoesNotCancelFill(t *testing.T) {
	g := newGate()
	e := newEnv(t, []registrytest.Option{registrytest.WithThrottle(32 << 20), registrytest.WithFault(g.fault)})
	data := registrytest.Random(2, 4<<20)
	d := e.up.PushBlob(t, "test/app", data)
	e.up.ResetCounts()
	url := e.url("/v2/test/app/blobs/" + d.String())

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	firstDone := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadFull(resp.Body, make([]byte, 1000))
			cancel() // hang up mid-body
			resp.Body.Close()
		}
		firstDone <- err
	}()
	<-g.arrived
	g.release()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	resp, body := e.do(http.MethodGet, url, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("second client: status %d, %d bytes", resp.StatusCode, len(body))
	}
	if n := e.up.BlobGets(d); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1: the hang-up cancelled the fill", n)
	}
}

// TestLyingUpstreamAbortsClients: bytes that do not match the digest are
// never committed, the connection of a client that joined the fill breaks
// instead of ending in a clean 200, and the next request tries again.
func TestLyingUpstreamAbortsClients(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(3, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	corrupt := bytes.Clone(data)
	corrupt[len(corrupt)/2] ^= 0xff
	var lie atomic.Bool
	lie.Store(true)
	// The lie is sent in two halves; the second waits until the test has
	// seen the client's response headers, so the client is surely attached
	// to the fill when verification fails.
	secondHalf := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !lie.Load() || r.Method != http.MethodGet || r.URL.Path != "/v2/test/app/blobs/"+d.String() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(corrupt)))
		w.Write(corrupt[:len(corrupt)/4])
		w.(http.Flusher).Flush()
		<-secondHalf
		w.Write(corrupt[len(corrupt)/4:])
		return true
	})
	url := e.url("/v2/test/app/blobs/" + d.String())

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("joined client: status %d, want 200 with headers sent early", resp.StatusCode)
	}
	close(secondHalf)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("client read %d bytes and a clean end from a corrupt fill", len(got))
	}
	if len(got) >= len(data) {
		t.Fatalf("client received all %d bytes of unverified content", len(got))
	}
	if _, err := e.store.Stat(d); !errors.Is(err, diskstore.ErrNotFound) {
		t.Fatalf("corrupt content was committed: %v", err)
	}
	if n := e.up.BlobGets(d); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1", n)
	}

	lie.Store(false)
	resp2, body := e.do(http.MethodGet, url, nil)
	if resp2.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("retry: status %d, %d bytes", resp2.StatusCode, len(body))
	}
	if n := e.up.BlobGets(d); n != 2 {
		t.Fatalf("upstream GETs = %d, want 2 (the lie, then the retry)", n)
	}
}

func TestBlobRanges(t *testing.T) {
	g := newGate()
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(g.fault)})
	data := registrytest.Random(4, 100_000)
	d := e.up.PushBlob(t, "test/app", data)
	url := e.url("/v2/test/app/blobs/" + d.String())

	// While the fill is in progress: a resume from an offset.
	during := make(chan []byte, 1)
	go func() {
		_, body := e.do(http.MethodGet, url, http.Header{"Range": {"bytes=1000-"}})
		during <- body
	}()
	<-g.arrived
	g.release()
	if got := <-during; !bytes.Equal(got, data[1000:]) {
		t.Fatalf("Range during fill: got %d bytes, want %d", len(got), len(data)-1000)
	}

	tests := []struct {
		rng        string
		wantStatus int
		want       []byte
		wantRange  string
	}{
		{"", 200, data, ""},
		{"bytes=1000-", 206, data[1000:], "bytes 1000-99999/100000"},
		{"bytes=10-19", 206, data[10:20], "bytes 10-19/100000"},
		{"bytes=-5", 206, data[99_995:], "bytes 99995-99999/100000"},
		{"bytes=100000-", 416, nil, "bytes */100000"},
		{"bytes=oops", 416, nil, "bytes */100000"},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			resp, body := e.do(http.MethodGet, url, http.Header{"Range": {tt.rng}})
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("Content-Range") != tt.wantRange {
				t.Fatalf("status %d Content-Range %q; want %d %q", resp.StatusCode, resp.Header.Get("Content-Range"), tt.wantStatus, tt.wantRange)
			}
			if tt.wantStatus == 416 {
				wantError(t, resp, body, 416, ocierr.CodeRangeInvalid)
				return
			}
			if !bytes.Equal(body, tt.want) || resp.ContentLength != int64(len(tt.want)) {
				t.Fatalf("got %d bytes (Content-Length %d), want %d", len(body), resp.ContentLength, len(tt.want))
			}
		})
	}
	if n := e.up.BlobGets(d); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1", n)
	}
}

func TestBlobHead(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(5, 5000)
	d := e.up.PushBlob(t, "test/app", data)
	url := e.url("/v2/test/app/blobs/" + d.String())
	for _, phase := range []string{"miss", "hit"} {
		t.Run(phase, func(t *testing.T) {
			resp, body := e.do(http.MethodHead, url, nil)
			if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 5000 ||
				resp.Header.Get("Docker-Content-Digest") != d.String() {
				t.Fatalf("HEAD: %d, length %d, digest %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
			}
		})
		if phase == "miss" {
			if n := e.up.BlobGets(d); n != 0 {
				t.Fatalf("HEAD of a missing blob downloaded it (%d GETs)", n)
			}
			e.do(http.MethodGet, url, nil)
		}
	}
	missing := digest.FromString("nothing here")
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+missing.String()), nil)
	wantError(t, resp, body, 404, ocierr.CodeBlobUnknown)
}

// TestUpstreamCutMidBlobResumes: the first upstream GET of a blob breaks
// after 300 KB; the fill resumes with a Range request from the byte
// reached, and the client gets the whole verified blob in one response.
func TestUpstreamCutMidBlobResumes(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(21, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	var cut atomic.Bool
	var ranges []string
	var mu sync.Mutex
	cutter := e.up.CutAfter(300_000, nil)
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/test/app/blobs/"+d.String() {
			return false
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if cut.CompareAndSwap(false, true) {
			return cutter(w, r)
		}
		return false
	})
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes, equal %v", resp.StatusCode, len(body), bytes.Equal(body, data))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=300000-" {
		t.Fatalf("upstream GETs had Range %q, want none then bytes=300000-", ranges)
	}
	if _, err := e.store.Stat(d); err != nil {
		t.Fatalf("the resumed blob was not committed: %v", err)
	}
}

// TestCloseAbortsFillsCleanly is the end of a graceful shutdown: a fill
// still downloading when the servers are done is aborted, its temporary
// file removed, and nothing partial is committed.
func TestCloseAbortsFillsCleanly(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(31, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/test/app/blobs/"+d.String() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:1000])
		w.(http.Flusher).Flush()
		select {
		case <-never:
		case <-r.Context().Done():
		}
		return true
	})
	resp, err := http.Get(e.url("/v2/test/app/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client leaves; the fill goes on without it
	if e.store.Filling(d) == nil {
		t.Fatal("no fill in progress")
	}
	e.mirror.Close()
	if e.store.Filling(d) != nil {
		t.Error("the fill is still in progress after Close")
	}
	if _, err := e.store.Stat(d); !errors.Is(err, diskstore.ErrNotFound) {
		t.Errorf("a partial fill was committed: %v", err)
	}
	left, err := os.ReadDir(filepath.Join(e.store.Root(), "tmp"))
	if err != nil || len(left) != 0 {
		t.Errorf("temporary files left: %d, %v", len(left), err)
	}
}
