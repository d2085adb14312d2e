package mirror

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestTagAnswerDoesNotWaitForCommit: a tag resolved by GET keeps its
// manifest in the store, and answers once the manifest is verified, not
// once it is committed (the commit waits for the store's fills to go
// quiet). The commits are held here until the answer has come.
func TestTagAnswerDoesNotWaitForCommit(t *testing.T) {
	held := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(held) }) }
	hold := diskstore.WithStepHook(func(st diskstore.Step) {
		if st == diskstore.StepReleased {
			<-held
		}
	})
	e := newEnvStore(t, []diskstore.Option{hold}, []registrytest.Option{registrytest.WithoutHeadDigest()})
	t.Cleanup(let) // before the env's own cleanups, which wait for the fills
	img := e.up.PushImage(t, "test/app", "v1", 100)
	want := img.Blobs[img.Index]
	got := make(chan []byte, 1)
	go func() {
		resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), acceptIndex)
		if resp.StatusCode != http.StatusOK {
			body = nil
		}
		got <- body
	}()
	select {
	case body := <-got:
		if !bytes.Equal(body, want) {
			t.Fatalf("by tag: %d bytes, want the index", len(body))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tag's answer waited for the manifest's commit")
	}
	if e.store.Filling(img.Index) == nil {
		t.Fatal("the manifest's commit was not held: the test proves nothing")
	}
	let()
}
