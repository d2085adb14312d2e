package mirror

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestBlobTooLargeForTheStoreStreamsUncached: a blob larger than the
// store's maximum is still served, to every concurrent client, verified,
// and nothing is cached.
func TestBlobTooLargeForTheStoreStreamsUncached(t *testing.T) {
	g := newGate()
	e := newEnvStore(t, []diskstore.Option{diskstore.WithMaxSize(1 << 20)}, []registrytest.Option{registrytest.WithFault(g.fault)})
	data := registrytest.Random(11, 3<<20)
	d := e.up.PushBlob(t, "test/big", data)
	const clients = 4
	getBehindGate(t, e, g, "/v2/test/big/blobs/"+d.String(), data, clients)
	if _, err := e.store.Stat(d); err == nil {
		t.Fatal("a blob larger than the store's maximum was cached")
	}
	if st := e.store.Stats(); st.PassThrough == 0 || st.Bytes != 0 {
		t.Fatalf("Stats = %+v, want pass-through fills and nothing stored", st)
	}
	if n := e.up.BlobGets(d); n < 1 || n > clients {
		t.Fatalf("upstream GETs = %d, want between 1 and %d", n, clients)
	}
}

// TestDiskFullMidFillKeepsStreaming: the store's disk fills up during a
// fill; every waiting client still gets the whole blob, and nothing is
// cached.
func TestDiskFullMidFillKeepsStreaming(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	store, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := newGate()
	e := newEnvOn(t, store, []registrytest.Option{registrytest.WithFault(g.fault)})
	data := registrytest.Random(12, 12<<20)
	d := e.up.PushBlob(t, "test/big", data)
	const clients = 3
	getBehindGate(t, e, g, "/v2/test/big/blobs/"+d.String(), data, clients)
	if _, err := store.Stat(d); err == nil {
		t.Fatal("a blob larger than the disk was committed")
	}
	// Clients that joined before the disk filled share the one fill; a
	// client that came too late to join gets its own uncached copy.
	if st := store.Stats(); st.PassThrough != 1 || e.up.BlobGets(d) < 1 || e.up.BlobGets(d) > clients+1 {
		t.Fatalf("want one fill that lost its disk and 1 to %d upstream GETs; %+v, %d GETs", clients+1, st, e.up.BlobGets(d))
	}
}

// getBehindGate sends n concurrent GETs of path, waits until all have
// reached nodecache and the one fill has reached upstream, opens the gate,
// and checks that every client got exactly want with a 200.
func getBehindGate(t *testing.T, e *env, g *gate, path string, want []byte, n int) {
	t.Helper()
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := http.Get(e.url(path))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != 200 || !bytes.Equal(body, want)) {
				err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(body))
			}
			errs <- err
		}()
	}
	for range n {
		<-e.arrived
	}
	<-g.arrived
	g.release()
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
