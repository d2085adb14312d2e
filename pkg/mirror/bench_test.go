package mirror

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// Benchmarks that compare nodecache with a baseline measure both in the
// same run, round by round, alternating which goes first, so that noise
// from the machine falls on both alike. They report figures; they assert
// nothing about speed.

const (
	// benchBlobSize is large enough that per-request costs vanish and a
	// GET measures streaming, small enough to push in well under a second.
	benchBlobSize = 64 << 20
	// benchWarmClients is the concurrency of the warm blob benchmark.
	benchWarmClients = 8
)

// benchEnv is one nodecache over real TCP in front of one real registry,
// like env but usable from benchmarks and without test hooks.
type benchEnv struct {
	up     *registrytest.Registry
	store  *diskstore.Store
	m      *Server
	srv    *httptest.Server
	client *http.Client
}

func newBenchEnv(b testing.TB, upOpts ...registrytest.Option) *benchEnv {
	b.Helper()
	e := &benchEnv{up: registrytest.Start(b, upOpts...), client: benchClient()}
	store, err := diskstore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e.store = store
	client, err := upstream.New(map[string]string{e.up.Host(): e.up.URL()})
	if err != nil {
		b.Fatal(err)
	}
	e.m = New(store, client, WithAllowList([]string{e.up.Host()}), WithDefaultRegistry(e.up.Host()))
	e.srv = httptest.NewServer(e.m)
	b.Cleanup(e.srv.Close)
	b.Cleanup(e.client.CloseIdleConnections)
	return e
}

// benchClient keeps a connection per concurrent client alive between
// requests, so that rounds measure transfers and not handshakes.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}}
}

func (e *benchEnv) blobURL(repo string, d digest.Digest) string {
	return e.srv.URL + "/v2/" + repo + "/blobs/" + d.String() + "?ns=" + e.up.Host()
}

// benchGet GETs url and discards the body, checking status and length.
func benchGet(c *http.Client, url string, header http.Header, want int64) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", url, n, err)
	}
	if resp.StatusCode != http.StatusOK || (want >= 0 && n != want) {
		return fmt.Errorf("GET %s: status %d, %d bytes, want 200 and %d", url, resp.StatusCode, n, want)
	}
	return nil
}

// benchGetAll has clients GET url at once, each once, and returns when
// the last one has its last byte.
func benchGetAll(c *http.Client, clients int, url string, want int64) error {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() { errs <- benchGet(c, url, nil, want) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkWarmBlob compares a cached blob served by nodecache with the
// same file served by http.FileServer (which uses sendfile), 8 clients
// each, interleaved round by round.
func BenchmarkWarmBlob(b *testing.B) {
	e := newBenchEnv(b)
	d := e.up.PushBlob(b, "bench/warm", registrytest.Random(1, benchBlobSize))
	url := e.blobURL("bench/warm", d)
	if err := benchGet(e.client, url, nil, benchBlobSize); err != nil { // fills the cache
		b.Fatal(err)
	}
	if _, err := e.store.Stat(d); err != nil {
		b.Fatalf("blob not committed after a full GET: %v", err)
	}
	fs := httptest.NewServer(http.FileServer(http.Dir(e.store.Root())))
	b.Cleanup(fs.Close)
	fsURL := fs.URL + "/" + filepath.ToSlash(filepath.Join("blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded()))
	fsClient := benchClient()
	b.Cleanup(fsClient.CloseIdleConnections)
	// One round each to open the connections and warm the page cache.
	for _, round := range []func() error{
		func() error { return benchGetAll(e.client, benchWarmClients, url, benchBlobSize) },
		func() error { return benchGetAll(fsClient, benchWarmClients, fsURL, benchBlobSize) },
	} {
		if err := round(); err != nil {
			b.Fatal(err)
		}
	}

	var tNC, tFS time.Duration
	b.ResetTimer()
	for i := range b.N {
		timeNC := func() error {
			start := time.Now()
			err := benchGetAll(e.client, benchWarmClients, url, benchBlobSize)
			tNC += time.Since(start)
			return err
		}
		timeFS := func() error {
			start := time.Now()
			err := benchGetAll(fsClient, benchWarmClients, fsURL, benchBlobSize)
			tFS += time.Since(start)
			return err
		}
		first, second := timeNC, timeFS
		if i%2 == 1 {
			first, second = timeFS, timeNC
		}
		if err := first(); err != nil {
			b.Fatal(err)
		}
		if err := second(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	mb := float64(b.N) * benchWarmClients * benchBlobSize / 1e6
	b.ReportMetric(mb/tNC.Seconds(), "nodecache-MB/s")
	b.ReportMetric(mb/tFS.Seconds(), "fileserver-MB/s")
	b.ReportMetric(tFS.Seconds()/tNC.Seconds(), "ratio")
}

// BenchmarkWarmManifest GETs a cached manifest by digest. The tcp case
// measures requests per second over real connections (its allocations
// include the client's); the handler case calls ServeHTTP directly, so
// its allocations are nodecache's alone.
func BenchmarkWarmManifest(b *testing.B) {
	e := newBenchEnv(b)
	img := e.up.PushSingleImage(b, "bench/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	size := int64(len(img.Blobs[d]))
	path := "/v2/bench/app/manifests/" + d.String() + "?ns=" + e.up.Host()
	accept := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	if err := benchGet(e.client, e.srv.URL+path, accept, size); err != nil { // fills the cache
		b.Fatal(err)
	}
	if _, err := e.store.Stat(d); err != nil { // the commit follows the last byte
		b.Fatalf("manifest not committed after a full GET: %v", err)
	}

	b.Run("tcp", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := benchGet(e.client, e.srv.URL+path, accept, size); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})

	b.Run("handler", func(b *testing.B) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header = accept
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.status = 0
			e.m.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}

func (w *discardWriter) WriteHeader(status int) { w.status = status }
