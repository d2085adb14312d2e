package daemon

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nodecache/internal/daemontest"
	"nodecache/internal/hostsdir"
	"nodecache/internal/registrytest"
	"nodecache/pkg/mirror"
)

func TestValidateNamesTheFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, "x")
	peers := func(c *Config) {
		c.Peers, c.Advertise, c.PeerListen, c.PeerSecretFile = []string{"10.0.0.2:5051"}, "10.0.0.1:5051", ":5051", "/s"
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no listen", func(c *Config) { c.Listen = nil }, "--listen: at least one"},
		{"bad listen", func(c *Config) { c.Listen = []string{"nowhere"} }, "--listen"},
		{"relative socket", func(c *Config) { c.Listen = []string{"unix://a.sock"} }, "must be absolute"},
		{"host name", func(c *Config) { c.Listen = []string{"node-1:5050"} }, "IP address or localhost"},
		{"no port", func(c *Config) { c.Listen = []string{"127.0.0.1:"} }, "missing port"},
		{"bad metrics", func(c *Config) { c.MetricsListen = "x" }, "--metrics-listen"},
		{"hosts dir a file", func(c *Config) { c.HostsDir = file }, "--hosts-dir"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{"negative ttl", func(c *Config) { c.TTL = -time.Second }, "--ttl"},
		{"negative grace", func(c *Config) { c.ShutdownGrace = -time.Second }, "--shutdown-grace"},
		{"negative fills", func(c *Config) { c.MaxConcurrentFills = -1 }, "--max-concurrent-fills"},
		{"negative connections", func(c *Config) { c.MaxConnections = -1 }, "--max-connections"},
		{"bad peer dns", func(c *Config) { c.PeerDNS = "peers" }, "--peer-dns"},
		{"advertise alone", func(c *Config) { c.Advertise = "10.0.0.1:5051" }, "--advertise: needs --peers"},
		{"no secret", func(c *Config) { peers(c); c.PeerSecretFile = "" }, "--peer-secret-file: required"},
		{"bad advertise", func(c *Config) { peers(c); c.Advertise = "10.0.0.1" }, "--advertise"},
		{"unix peer listen", func(c *Config) { peers(c); c.PeerListen = "unix:///p.sock" }, "peers connect over TCP"},
		{"bad peer listen", func(c *Config) { peers(c); c.PeerListen = "node:5051" }, "--peer-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Listen: []string{DefaultListen}, DataDir: t.TempDir()}
			tc.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Validate = %v, want one line containing %q", err, tc.want)
			}
			// New refuses the same Config as a *ConfigError.
			_, err = New(cfg, quietLogger())
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ce.Err) {
				t.Fatalf("New = %v, want a *ConfigError", err)
			}
		})
	}
	cfg := Config{Listen: []string{DefaultListen, "unix:///run/n.sock", "[::1]:5050"}, DataDir: DefaultDataDir()}
	peers(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a good Config: %v", err)
	}
}

func TestStoreBounds(t *testing.T) {
	cfg := Config{MinFree: Size{Percent: 10}}
	if got, free := cfg.StoreBounds(1 << 40); got != 20<<30 || free != 1<<40/10 {
		t.Errorf("on 1 TiB: %d, %d; want 20 GiB and 10%%", got, free)
	}
	if got, _ := cfg.StoreBounds(100 << 30); got != 15<<30 {
		t.Errorf("on 100 GiB: max size %d, want 15 GiB", got)
	}
	cfg.MaxSize = &Size{Bytes: 1 << 20}
	if got, _ := cfg.StoreBounds(1 << 40); got != 1<<20 {
		t.Errorf("an explicit max size: %d", got)
	}
	for s, want := range map[Size]string{{Percent: 15}: "15%", {Bytes: 3 << 29}: "1.5GiB", {Bytes: 12}: "12B"} {
		if got := s.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", s, got, want)
		}
	}
}

// TestProbes: /readyz is 503 until ready and after shutdown starts;
// /healthz answers whenever the process does.
func TestProbes(t *testing.T) {
	var ready atomic.Bool
	probes := newProbes(&ready, prometheus.NewRegistry())
	code := func(path string) int {
		rec := httptest.NewRecorder()
		probes.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if code("/readyz") != http.StatusServiceUnavailable || code("/healthz") != http.StatusOK {
		t.Errorf("not ready: /readyz %d, /healthz %d", code("/readyz"), code("/healthz"))
	}
	ready.Store(true)
	if code("/readyz") != http.StatusOK || code("/metrics") != http.StatusOK {
		t.Errorf("ready: /readyz %d, /metrics %d", code("/readyz"), code("/metrics"))
	}
}

// TestNotifyWithoutSystemd: a NOTIFY_SOCKET nobody listens on is logged,
// not fatal; without one, notify does nothing.
func TestNotifyWithoutSystemd(t *testing.T) {
	logs := make(logRecords, 4)
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	notify(slogFor(logs), "READY=1")
	if m := <-logs; m != "systemd notify failed" {
		t.Errorf("log %q", m)
	}
	os.Unsetenv("NOTIFY_SOCKET")
	notify(slogFor(logs), "READY=1")
	if len(logs) != 0 {
		t.Errorf("logged %q without NOTIFY_SOCKET", <-logs)
	}
}

// TestDaemonWithCredentialsAndHostsDir: the daemon reads its upstream
// from a hosts directory and loads the node's credentials.
func TestDaemonWithCredentialsAndHostsDir(t *testing.T) {
	states := daemontest.ListenNotify(t)
	up := registrytest.Start(t)
	blob := up.PushBlob(t, "team/app", registrytest.Random(4, 1<<10))
	cfg := testConfig(t, up)
	cfg.Registries = nil
	cfg.HostsDir = t.TempDir()
	if err := os.MkdirAll(filepath.Dir(hostsdir.Path(cfg.HostsDir, up.Host())), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, hostsdir.Path(cfg.HostsDir, up.Host()), "server = \""+up.URL()+"\"\n")
	cfg.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	writeFile(t, cfg.DockerConfig, `{"auths": {"`+up.Host()+`": {"username": "u", "password": "p"}}}`)
	d := start(t, cfg)
	if d.creds == nil {
		t.Fatal("no credentials store")
	}
	states.Wait(t, "READY=1")
	if code, body := get(t, "http://"+d.Addrs().Mirror[0]+"/v2/team/app/blobs/"+blob.String()); code != http.StatusOK || len(body) != 1<<10 {
		t.Errorf("pull through the hosts directory's endpoint: %d, %d bytes", code, len(body))
	}
}

// TestZeroMeans: a setting of 0 reaches the option as the value that turns
// the bound off, and any other setting passes unchanged, so --tag-ttl 0
// and --ttl 0 keep the meaning the flags give them.
func TestZeroMeans(t *testing.T) {
	for _, tt := range []struct{ setting, off, want time.Duration }{
		{0, mirror.AlwaysAsk, mirror.AlwaysAsk},
		{0, mirror.NoLimit, mirror.NoLimit},
		{5 * time.Second, mirror.AlwaysAsk, 5 * time.Second},
	} {
		if got := zeroMeans(tt.setting, tt.off); got != tt.want {
			t.Errorf("zeroMeans(%v, %v) = %v, want %v", tt.setting, tt.off, got, tt.want)
		}
	}
}
