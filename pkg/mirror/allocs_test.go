package mirror

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Allocations of a cached manifest served from memory, by digest and by
// tag within the tag TTL, with the access line formatted as the daemon
// formats it and the metrics on. These answers are the busiest path of
// the daemon (every pod start asks for them), and each allocation on it
// costs throughput: the bounds are today's counts, so that a change that
// adds one shows here, to be justified or removed.
const (
	maxMemoryHitAllocsByDigest = 2
	maxMemoryHitAllocsByTag    = 3
)

func TestMemoryHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	e := newBenchEnv(t)
	e.m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	e.m.metrics = NewMetrics()
	img := e.up.PushSingleImage(t, "bench/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	accept := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	for _, tt := range []struct {
		name, path string
		max        float64
	}{
		{"digest", "/v2/bench/app/manifests/" + d.String() + "?ns=" + e.up.Host(), maxMemoryHitAllocsByDigest},
		{"tag", "/v2/bench/app/manifests/v1?ns=" + e.up.Host(), maxMemoryHitAllocsByTag},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := benchGet(e.client, e.srv.URL+tt.path, accept, int64(len(img.Blobs[d]))); err != nil {
				t.Fatal(err) // fills the store and the tag record
			}
			// The commit follows the last byte: until it is done, a
			// request joins the fill instead of a hit. Stat waits for it;
			// the first serve below then copies the manifest into memory.
			if _, err := e.store.Stat(d); err != nil {
				t.Fatalf("manifest not committed after a full GET: %v", err)
			}
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			req.Header = accept
			w := &discardWriter{h: http.Header{}}
			serve := func() {
				clear(w.h)
				w.status = 0
				e.m.ServeHTTP(w, req)
			}
			serve()
			if w.status != http.StatusOK || w.h.Get("Docker-Content-Digest") != d.String() {
				t.Fatalf("status %d, digest %q: not a hit", w.status, w.h.Get("Docker-Content-Digest"))
			}
			if got := e.m.metrics.byRoute["manifests"].requests[resultHit]; got == nil {
				t.Fatal("no hit series")
			}
			n := testing.AllocsPerRun(200, serve)
			t.Logf("%v allocations per request", n)
			if n > tt.max {
				t.Errorf("a memory hit by %s allocates %v times, want at most %v", tt.name, n, tt.max)
			}
		})
	}
}

// FuzzQueryValue holds queryValue to url.ParseQuery's answer.
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{"", "ns=docker.io", "a=1&ns=x&ns=y", "ns", "ns=&ns=x", "n%73=x", "ns=a+b", "ns=a;b", "&&ns=x", "ns=%zz&ns=x", "=x&ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, _ := url.ParseQuery(raw)
		if got, want := queryValue(raw, "ns"), v.Get("ns"); got != want {
			t.Fatalf("queryValue(%q) = %q, url.ParseQuery says %q", raw, got, want)
		}
	})
}

// TestFirstValue holds firstValue to Header.Get for the keys it is used
// with, which must be canonical for the two to agree.
func TestFirstValue(t *testing.T) {
	h := http.Header{}
	h.Add("authorization", "Basic eDp5")
	h.Add("Range", "bytes=0-1")
	h.Add("Range", "bytes=2-3")
	h["Docker-Content-Digest"] = []string{}
	for _, key := range []string{"Authorization", "Range", "Docker-Content-Digest", "Accept"} {
		if c := http.CanonicalHeaderKey(key); c != key {
			t.Fatalf("%q is not canonical (%q)", key, c)
		}
		if got, want := firstValue(h, key), h.Get(key); got != want {
			t.Errorf("firstValue(%q) = %q, Header.Get says %q", key, got, want)
		}
	}
}
