package mirror

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestBoundedRangeOfLyingFillAborts: a Range read that ends before the
// last byte of a fill still waits for the fill's verification before it
// completes. Upstream sends wrong bytes of the right length; a client
// reading bytes=0-99 of the fill gets a broken connection, never a
// complete 206, though its hundred bytes arrived long before the lie was
// found.
func TestBoundedRangeOfLyingFillAborts(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(31, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	corrupt := bytes.Clone(data)
	corrupt[len(corrupt)-10] ^= 0xff // after the range the client reads
	secondHalf := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/test/app/blobs/"+d.String() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(corrupt)))
		w.Write(corrupt[:len(corrupt)/4])
		w.(http.Flusher).Flush()
		<-secondHalf
		w.Write(corrupt[len(corrupt)/4:])
		return true
	})
	req, err := http.NewRequest(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=0-99")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("status %d, want 206 with headers sent early", resp.StatusCode)
	}
	// The first 99 bytes may arrive; the hundredth waits for the commit.
	head := make([]byte, 99)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("reading the first 99 bytes: %v", err)
	}
	close(secondHalf)
	rest, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("client read a complete 206 (%d bytes) of a fill that failed verification", len(head)+len(rest))
	}
	if _, err := e.store.Stat(d); !errors.Is(err, diskstore.ErrNotFound) {
		t.Fatalf("corrupt content was committed: %v", err)
	}
}

// TestBoundedRangeOfGoodFillCompletes: the same read of an honest fill
// completes once the fill is committed, with the right bytes.
func TestBoundedRangeOfGoodFillCompletes(t *testing.T) {
	g := newGate()
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(g.fault)})
	data := registrytest.Random(32, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	got := make(chan []byte, 1)
	go func() {
		_, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), http.Header{"Range": {"bytes=100-199"}})
		got <- body
	}()
	<-g.arrived
	g.release()
	if body := <-got; !bytes.Equal(body, data[100:200]) {
		t.Fatalf("range: got %d bytes, want bytes 100-199", len(body))
	}
}
