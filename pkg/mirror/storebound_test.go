package mirror

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// heldTmpFiles returns how many files under the store's tmp/ this process
// holds open, removed or not, and the size of the largest: what fills in
// progress take of the disk.
func heldTmpFiles(t *testing.T, store *diskstore.Store) (n int, largest int64) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	tmp := filepath.Join(store.Root(), "tmp") + string(filepath.Separator)
	for _, fd := range fds {
		p := filepath.Join("/proc/self/fd", fd.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, tmp) {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			n++
			largest = max(largest, fi.Size())
		}
	}
	return n, largest
}

// TestNeverEndingBlobStaysWithinMaxSize: a blob answer without a length
// that never ends takes no more of the disk than --max-size, and once
// its client has gone, the fill ends and lets go of its file.
func TestNeverEndingBlobStaysWithinMaxSize(t *testing.T) {
	const maxSize = 1 << 20
	ended := make(chan struct{}, 1)
	e := newEnvStore(t, []diskstore.Option{diskstore.WithMaxSize(maxSize)},
		[]registrytest.Option{registrytest.WithFault(notifyEnd(registrytest.Endless(registrytest.Route(http.MethodGet, registrytest.KindBlobs)), ended))})
	t.Cleanup(e.mirror.Close) // before the upstream stops: ends the fill even if the test fails
	d := digest.FromString("a layer that never ends")
	resp, err := http.Get(e.url("/v2/team/app/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	for read := 0; read < 4*maxSize; {
		n, err := io.ReadFull(resp.Body, buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", read, err)
		}
		read += n
		if _, largest := heldTmpFiles(t, e.store); largest > maxSize || e.store.Stats().Reserved > maxSize {
			t.Fatalf("after %d bytes the fill holds a %d-byte file, %d reserved; --max-size is %d",
				read, largest, e.store.Stats().Reserved, maxSize)
		}
	}
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(30 * time.Second): // bounds a failing test only
		t.Fatal("the upstream download went on after the client left")
	}
	if n, _ := heldTmpFiles(t, e.store); n != 0 || e.store.Stats().Reserved != 0 || e.store.Len() != 0 {
		t.Fatalf("after the client left: %d temporary files held, %+v", n, e.store.Stats())
	}
}

// TestUnsizedManifestIsCapped: a manifest answer without a length is held
// to the manifest cap as one with a length is: past it the fill fails, no
// client gets more than the cap, and nothing is cached.
func TestUnsizedManifestIsCapped(t *testing.T) {
	big := registrytest.Random(9, 5<<20)
	d := digest.FromBytes(big)
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(registrytest.UnsizedBody(big, ocispec.MediaTypeImageManifest,
		registrytest.Route(http.MethodGet, registrytest.KindManifests)))})
	req, err := http.NewRequest(http.MethodGet, e.url("/v2/team/app/manifests/"+d.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) > maxManifestSize || (resp.StatusCode == http.StatusOK && err == nil) {
		t.Fatalf("status %d, %d bytes, %v: want an error or a cut connection, never more than %d bytes", resp.StatusCode, len(body), err, maxManifestSize)
	}
	if err == nil {
		wantError(t, resp, body, http.StatusBadGateway, "MANIFEST_INVALID")
	}
	e.mirror.Close() // waits for the fill to end
	if _, err := e.store.Stat(d); !errors.Is(err, diskstore.ErrNotFound) {
		t.Fatalf("a %d-byte manifest was cached (%v)", len(big), err)
	}
}

// notifyEnd passes requests to f and, each time f has answered one (an
// Endless body ends only when its client goes), sends on ended without
// blocking.
func notifyEnd(f registrytest.Fault, ended chan<- struct{}) registrytest.Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !f(w, r) {
			return false
		}
		select {
		case ended <- struct{}{}:
		default:
		}
		return true
	}
}
