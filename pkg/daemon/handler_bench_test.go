package daemon

import (
	"log/slog"
	"net/http"
	"os"
	"testing"

	"nodecache/internal/registrytest"
)

// BenchmarkCachedManifestHandler serves a cached manifest, by digest
// and by tag, through the mirror's handler as the daemon builds it (its
// text log through a LogWriter to a file, its metrics), without the
// network: what nodecache itself spends on the busiest answer, apart
// from net/http and the kernel that TestProfileCachedManifest includes.
func BenchmarkCachedManifestHandler(b *testing.B) {
	up := registrytest.Start(b)
	img := up.PushSingleImage(b, "bench/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	logFile, err := os.Create(b.TempDir() + "/log")
	if err != nil {
		b.Fatal(err)
	}
	lw := NewLogWriter(logFile, 0)
	b.Cleanup(func() { lw.Close() })
	r := startWith(b, testConfig(b, up), slog.New(NewTextHandler(lw, nil)))
	h := r.servers.mirror.Handler
	accept := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	for _, c := range []struct{ name, path string }{
		{"digest", "/v2/bench/app/manifests/" + d.String()},
		{"tag", "/v2/bench/app/manifests/v1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1"+c.path, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header = accept
			w := &headerOnlyWriter{h: http.Header{}}
			serve := func() {
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, req)
			}
			serve() // fills the store (and the tag record)
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
			if _, err := r.store.Stat(d); err != nil { // the commit follows the last byte
				b.Fatalf("manifest not committed after a full GET: %v", err)
			}
			serve() // copies the manifest into memory
			b.ReportAllocs()
			for b.Loop() {
				serve()
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// headerOnlyWriter is a ResponseWriter that keeps the status and
// discards the body.
type headerOnlyWriter struct {
	h      http.Header
	status int
}

func (w *headerOnlyWriter) Header() http.Header { return w.h }

func (w *headerOnlyWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}

func (w *headerOnlyWriter) WriteHeader(status int) { w.status = status }
