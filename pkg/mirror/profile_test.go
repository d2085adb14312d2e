//go:build mirrorprofile

package mirror

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestProfileCachedManifest profiles the cached-manifest path under wrk
// load (c=32), over a real socket, with the access log formatted as the
// daemon formats it. It needs wrk; run it with
//
//	go test -tags mirrorprofile -run ProfileCachedManifest ./pkg/mirror/
//
// with PROFILE=FILE to write a CPU profile. A bare handler writing the same
// bytes is measured side by side, as the ceiling.
func TestProfileCachedManifest(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("needs wrk")
	}
	e := newBenchEnv(t)
	img := e.up.PushSingleImage(t, "bench/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	body := img.Blobs[d]
	e.m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	e.m.metrics = NewMetrics()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.m, ReadHeaderTimeout: readHeaderTimeoutProfile}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	bare := bareServer(t, body, d.String())
	base := "http://" + ln.Addr().String()
	paths := map[string]string{
		"digest": base + "/v2/bench/app/manifests/" + d.String() + "?ns=" + e.up.Host(),
		"tag":    base + "/v2/bench/app/manifests/v1?ns=" + e.up.Host(),
		"bare":   bare,
	}
	for _, u := range paths { // warm
		if err := benchGet(e.client, u, http.Header{"Accept": {ocispec.MediaTypeImageManifest}}, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	if f := os.Getenv("PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	for range 2 {
		for _, name := range []string{"bare", "digest", "tag"} {
			t.Logf("%s: %.0f req/s", name, wrk(t, paths[name]))
		}
	}
}

const readHeaderTimeoutProfile = 10e9

func bareServer(t *testing.T, body []byte, d string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{ocispec.MediaTypeImageManifest}
		h["Docker-Content-Digest"] = []string{d}
		h["Content-Length"] = []string{fmt.Sprint(len(body))}
		w.Write(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/manifest"
}

func wrk(t *testing.T, url string) float64 {
	out, err := exec.Command("wrk", "-t2", "-c32", "-d4s", "-H", "Accept: "+ocispec.MediaTypeImageManifest, url).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if regexp.MustCompile(`Non-2xx`).Match(out) {
		t.Fatalf("errors: %s", out)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
	var f float64
	fmt.Sscan(string(m[1]), &f)
	return f
}
