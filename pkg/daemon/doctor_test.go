package daemon

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

// TestDoctorProblemsMetric: given containerd's configuration, the daemon
// exports nodecache_doctor_problems, read again at each scrape.
func TestDoctorProblemsMetric(t *testing.T) {
	states := daemontest.ListenNotify(t)
	cfg := testConfig(t, registrytest.Start(t))
	cfg.HostsDir = t.TempDir()
	cfg.ContainerdConfig = filepath.Join(t.TempDir(), "config.toml")
	writeFile(t, cfg.ContainerdConfig, "version = 3\n")
	d := start(t, cfg)
	states.Wait(t, "READY=1")
	sample := func() string {
		code, body := get(t, "http://"+d.Addrs().Metrics[0]+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "nodecache_doctor_problems{") {
				return strings.TrimSpace(line)
			}
		}
		t.Fatal("no nodecache_doctor_problems in /metrics")
		return ""
	}
	want := `nodecache_doctor_problems{file="` + cfg.ContainerdConfig + `"} `
	if got := sample(); got != want+"1" {
		t.Errorf("config_path unset: %q, want %q", got, want+"1")
	}
	writeFile(t, cfg.ContainerdConfig, "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '"+cfg.HostsDir+"'\n")
	if got := sample(); got != want+"0" {
		t.Errorf("config_path set: %q, want %q", got, want+"0")
	}
}
