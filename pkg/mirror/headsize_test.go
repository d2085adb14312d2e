package mirror

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/upstream"
)

// TestHeadDuringUnsizedFillHasLength: upstream streams a blob without
// Content-Length; a HEAD that arrives while the fill runs waits for the
// fill's end and answers with the size, as the README promises.
func TestHeadDuringUnsizedFillHasLength(t *testing.T) {
	e := newEnv(t, nil)
	data := registrytest.Random(41, 256<<10)
	d := e.up.PushBlob(t, "test/app", data)
	path := "/v2/test/app/blobs/" + d.String()
	secondHalf := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != path {
			return false
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush() // chunked: no Content-Length
		<-secondHalf
		w.Write(data[len(data)/2:])
		return true
	})
	resp, err := http.Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != -1 {
		t.Fatalf("GET of an unsized fill: Content-Length %d, want none", resp.ContentLength)
	}
	<-e.arrived // the GET
	go func() {
		<-e.arrived // the HEAD
		close(secondHalf)
	}()
	head, _ := e.do(http.MethodHead, e.url(path), nil)
	if head.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: status %d", head.StatusCode)
	}
	if got := head.Header.Get("Content-Length"); got != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD during an unsized fill: Content-Length %q, want %d", got, len(data))
	}
}

// TestHeadDuringEndlessUnsizedFillAsksUpstream: a fill of unknown size
// that does not end within the wait is not waited for longer; the HEAD is
// answered from upstream's HEAD, with its size.
func TestHeadDuringEndlessUnsizedFillAsksUpstream(t *testing.T) {
	e := newEnv(t, nil)
	e.mirror.headSizeWait = 50 * time.Millisecond
	data := registrytest.Random(42, 256<<10)
	d := e.up.PushBlob(t, "test/app", data)
	path := "/v2/test/app/blobs/" + d.String()
	testEnd := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != path {
			return false
		}
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush() // chunked: no Content-Length
		select {
		case <-r.Context().Done():
		case <-testEnd:
		}
		return true
	})
	resp, err := http.Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(testEnd); resp.Body.Close() })
	heads := e.up.Count(http.MethodHead, registrytest.KindBlobs)
	head, _ := e.do(http.MethodHead, e.url(path), nil)
	if head.StatusCode != http.StatusOK || head.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD: status %d, Content-Length %q; want 200, %d", head.StatusCode, head.Header.Get("Content-Length"), len(data))
	}
	if e.up.Count(http.MethodHead, registrytest.KindBlobs) != heads+1 {
		t.Fatal("the HEAD was not answered from upstream's HEAD")
	}
}

// TestHeadSizeWaitFitsContainerdsWait: a HEAD may wait headSizeWait for a
// fill and then ask upstream, within its first-response budget; both
// together must answer before containerd gives up on headers (30 s).
func TestHeadSizeWaitFitsContainerdsWait(t *testing.T) {
	const containerdHeaderWait = 30 * time.Second
	if worst := headSizeWait + upstream.DefaultFirstResponseBudget; worst >= containerdHeaderWait {
		t.Fatalf("headSizeWait %v + first-response budget %v = %v, not below containerd's %v",
			headSizeWait, upstream.DefaultFirstResponseBudget, worst, containerdHeaderWait)
	}
}
