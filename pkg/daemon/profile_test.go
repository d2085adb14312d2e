//go:build daemonprofile

package daemon

import (
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// TestProfileCachedManifest profiles the whole daemon, as the binary runs
// it (text log through a LogWriter to a file, metrics, the probes beside
// the mirror), serving a cached manifest by digest and by tag to wrk at
// c=32. A test build only (tag daemonprofile), so the production
// listeners keep no pprof:
//
//	PROFILE=cpu.prof go test -tags daemonprofile -run ProfileCachedManifest ./pkg/daemon/
func TestProfileCachedManifest(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("needs wrk")
	}
	up := registrytest.Start(t)
	img := up.PushSingleImage(t, "bench/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	logFile, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	lw := NewLogWriter(logFile, 0)
	t.Cleanup(func() { lw.Close() })
	r := startWith(t, testConfig(t, up), slog.New(NewTextHandler(lw, nil)))
	base := "http://" + r.Addrs().Mirror[0]
	paths := []string{base + "/v2/bench/app/manifests/" + d.String(), base + "/v2/bench/app/manifests/v1"}
	for _, u := range paths {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", u, err, resp)
		}
		resp.Body.Close()
	}
	if f := os.Getenv("PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	secs := 5 * time.Second
	if s, err := strconv.Atoi(os.Getenv("PROFILE_SECONDS")); err == nil {
		secs = time.Duration(s) * time.Second
	}
	for _, u := range paths {
		before := cpuTime(t)
		out, err := exec.Command("wrk", "-t2", "-c32", "-d"+strconv.Itoa(int(secs.Seconds()))+"s",
			"-H", "Accept: application/vnd.oci.image.manifest.v1+json", u).CombinedOutput()
		if err != nil || regexp.MustCompile(`Non-2xx|Socket errors`).Match(out) {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		used := cpuTime(t) - before
		n, _ := strconv.Atoi(string(regexp.MustCompile(`([0-9]+) requests in`).FindSubmatch(out)[1]))
		// The CPU per request is the steadier figure for comparing two
		// builds: wrk's rate moves with whatever else the machine runs.
		t.Logf("%s: %s req/s, %.1f µs CPU per request", u,
			regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)[1], float64(used.Microseconds())/float64(n))
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
