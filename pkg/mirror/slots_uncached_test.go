package mirror

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestUncachedStreamHoldsItsSlot: a blob too large for the store is
// streamed uncached, and its download keeps its fill slot until the
// stream is closed. With room for one fill, a second cold large blob
// waits while the first is being read, and is served once it closes;
// before, the slot was freed as soon as the download turned out
// uncacheable, so every connection got its own upstream download.
func TestUncachedStreamHoldsItsSlot(t *testing.T) {
	e, _, waiting := slotEnv(t, diskstore.WithMaxSize(1<<20))
	t.Cleanup(e.mirror.Close)
	first := registrytest.Random(93, 2<<20)
	second := registrytest.Random(94, 2<<20)
	d1 := e.up.PushBlob(t, "test/big", first)
	d2 := e.up.PushBlob(t, "test/big", second)
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	e.up.SetFault(e.up.Stall(64<<10, gate, registrytest.Path(http.MethodGet, "/v2/test/big/blobs/"+d1.String())))

	resp1, err := http.Get(e.url("/v2/test/big/blobs/" + d1.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp1.Body.Close()
	got2 := getLater(e.url("/v2/test/big/blobs/" + d2.String()))
	within(t, waiting, "the second large blob to wait for a slot")
	if n := e.up.BlobGets(d2); n != 0 {
		t.Fatalf("upstream GETs of the waiting blob = %d, want 0", n)
	}

	gate.Release()
	b1, err := io.ReadAll(resp1.Body)
	if err != nil || !bytes.Equal(b1, first) {
		t.Fatalf("first: %d bytes, %v", len(b1), err)
	}
	resp1.Body.Close()
	wantAnswer(t, got2, second, "the blob waiting for the first stream to close")
	if _, err := e.store.Stat(d1); err == nil {
		t.Fatal("a blob larger than the store's maximum was cached")
	}
}
