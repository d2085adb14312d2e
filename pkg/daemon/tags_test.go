package daemon

import (
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"nodecache/internal/registrytest"
)

// TestTagRecordsOnTheDataDir: the daemon keeps its tag records in
// --data-dir/tags and serves the circuit's gauge on /metrics; where that
// directory cannot be made, it keeps them in memory and serves anyway.
func TestTagRecordsOnTheDataDir(t *testing.T) {
	for _, blocked := range []bool{false, true} {
		name := map[bool]string{false: "on disk", true: "in memory"}[blocked]
		t.Run(name, func(t *testing.T) {
			up := registrytest.Start(t)
			up.PushImage(t, "test/app", "v1", 100)
			cfg := testConfig(t, up)
			if blocked {
				writeFile(t, filepath.Join(cfg.DataDir, "tags"), "a file where the directory would be")
			}
			r := start(t, cfg)
			base := "http://" + r.Addrs().Mirror[0]
			if status, _ := get(t, base+"/v2/test/app/manifests/v1"); status != http.StatusOK {
				t.Fatalf("by tag: status %d", status)
			}
			if r.tags.Len() != 1 {
				t.Fatalf("%d tag records, want 1", r.tags.Len())
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if blocked {
				return
			}
			b, err := os.ReadFile(filepath.Join(cfg.DataDir, "tags", "tags.log"))
			if err != nil || !strings.Contains(string(b), "/test/app:v1|") {
				t.Fatalf("tags.log after a clean stop: %q, %v; want the tag's record", b, err)
			}
		})
	}
}

// TestCircuitGaugeIsServed: nodecache_upstream_circuit_open is
// registered, so it shows on /metrics once a registry has been asked;
// the probe of the registry marked down ends when the daemon stops.
func TestCircuitGaugeIsServed(t *testing.T) {
	up := registrytest.Start(t)
	cfg := testConfig(t, up)
	up.Close() // refused: the first request marks it down
	r := start(t, cfg)
	base := "http://" + r.Addrs().Mirror[0]
	if status, _ := get(t, base+"/v2/test/app/manifests/v1"); status != http.StatusServiceUnavailable {
		t.Fatalf("registry down: status %d, want 503", status)
	}
	_, metrics := get(t, "http://"+r.Addrs().Metrics[0]+"/metrics")
	if !strings.Contains(metrics, `nodecache_upstream_circuit_open{registry="`+up.Host()+`"} 1`) {
		t.Fatalf("no open circuit for %s in /metrics", up.Host())
	}
	// The circuit's probe ends with Run, not with the process.
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "probeUntilAnswered") {
		t.Fatal("a registry probe still runs after Run returned")
	}
}
