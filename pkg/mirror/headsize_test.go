package mirror

import (
	"net/http"
	"strconv"
	"testing"

	"nodecache/internal/registrytest"
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
