package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
	"nodecache/pkg/mirror"
)

// testTimeout bounds every wait of these tests, so that a hang fails
// with a message rather than at the test binary's timeout.
const testTimeout = 30 * time.Second

// testConfig is a daemon in front of up on 127.0.0.1 ports of its own.
func testConfig(t testing.TB, up *registrytest.Registry) Config {
	return Config{
		Listen:          []string{"127.0.0.1:0"},
		MetricsListen:   "127.0.0.1:0",
		DataDir:         t.TempDir(),
		Registries:      map[string]string{up.Host(): up.URL()},
		DefaultRegistry: up.Host(),
		AllowRegistries: []string{up.Host()},
		TagTTL:          mirror.DefaultTagTTL,
		FillTimeout:     mirror.DefaultFillTimeout,
		ShutdownGrace:   testTimeout,
		Version:         "test",
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// running is a Daemon whose Run goroutine the test stops with stop.
type running struct {
	*Daemon
	cancel context.CancelFunc
	done   chan error
}

// start runs New and Run, and stops the daemon when the test ends.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	return startWith(t, cfg, quietLogger())
}

// startWith is start with log as the daemon's logger.
func startWith(t testing.TB, cfg Config, log *slog.Logger) *running {
	t.Helper()
	d, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Daemon: d, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its error; later calls return nil.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(testTimeout):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestDaemonServesPullsAndShutsDownGracefully runs the daemon in-process
// in front of a registry: it says READY=1 with a STATUS line, pings the
// watchdog while it serves, serves a pull, /readyz and /metrics on the
// right listeners, and on cancel says STOPPING=1, lets a pull in flight
// finish, and returns nil.
func TestDaemonServesPullsAndShutsDownGracefully(t *testing.T) {
	states := daemontest.ListenNotify(t)
	t.Setenv("WATCHDOG_USEC", "300000")
	// Slow enough that the second pull is still streaming when the daemon
	// is told to stop.
	up := registrytest.Start(t, registrytest.WithThrottle(4<<20))
	small := up.PushBlob(t, "team/app", registrytest.Random(1, 64<<10))
	large := up.PushBlob(t, "team/app", registrytest.Random(2, 2<<20))
	d := start(t, testConfig(t, up))
	addrs := d.Addrs()
	if len(addrs.Mirror) != 1 || len(addrs.Metrics) != 1 || len(addrs.Peer) != 0 {
		t.Fatalf("listening on %+v, want one mirror and one metrics address", addrs)
	}
	base, metrics := "http://"+addrs.Mirror[0], "http://"+addrs.Metrics[0]

	states.Wait(t, "READY=1")
	if s := states.Wait(t, "STATUS="); !strings.Contains(s, "serving on "+addrs.Mirror[0]) {
		t.Errorf("status line %q", s)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d", code)
	}
	if code, body := get(t, base+"/v2/team/app/blobs/"+small.String()); code != http.StatusOK || digest.FromString(body) != small {
		t.Errorf("pull through the daemon: status %d, content %s", code, digest.FromString(body))
	}
	if code, body := get(t, metrics+"/metrics"); code != http.StatusOK || !strings.Contains(body, "nodecache_store_entries 1") {
		t.Errorf("GET /metrics on the metrics listener: %d, store entries not 1", code)
	}
	if _, body := get(t, metrics+"/metrics"); !strings.Contains(body, `nodecache_upstream_redirects_refused_total{reason="internal_address"} 0`) {
		t.Error("GET /metrics: the upstream client's refused redirects are not exported")
	}
	if code, _ := get(t, metrics+"/v2/"); code != http.StatusNotFound {
		t.Errorf("the metrics listener served the mirror: GET /v2/ = %d", code)
	}
	states.Wait(t, "WATCHDOG=1")
	states.Wait(t, "WATCHDOG=1") // pinged again, not once

	resp, err := http.Get(base + "/v2/team/app/blobs/" + large.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := digest.SHA256.Digester()
	if _, err := io.CopyN(h.Hash(), resp.Body, 1); err != nil {
		t.Fatal(err)
	}
	d.cancel()
	states.Wait(t, "STOPPING=1")
	if _, err := io.Copy(h.Hash(), resp.Body); err != nil || h.Digest() != large {
		t.Errorf("the pull in flight during shutdown: content %s, error %v", h.Digest(), err)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := http.Get(base + "/readyz"); err == nil {
		t.Error("the mirror listener still answers after Run returned")
	}
}

// TestShutdownGraceAbortsWhatIsLeft: a pull that outlasts the grace
// period is cut, and Run reports that the shutdown was not clean.
func TestShutdownGraceAbortsWhatIsLeft(t *testing.T) {
	states := daemontest.ListenNotify(t)
	up := registrytest.Start(t, registrytest.WithThrottle(1<<20))
	large := up.PushBlob(t, "team/app", registrytest.Random(3, 8<<20))
	cfg := testConfig(t, up)
	cfg.ShutdownGrace = time.Millisecond
	d := start(t, cfg)
	states.Wait(t, "READY=1")
	resp, err := http.Get("http://" + d.Addrs().Mirror[0] + "/v2/team/app/blobs/" + large.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.CopyN(io.Discard, resp.Body, 1); err != nil {
		t.Fatal(err)
	}
	err = d.stop(t)
	if err == nil || !strings.Contains(err.Error(), "shutdown") {
		t.Fatalf("Run = %v, want a shutdown error", err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Errorf("the pull finished (%d more bytes) though the grace period was over", n)
	}
}

func TestNewRefusesWhatItCannotOpen(t *testing.T) {
	up := registrytest.Start(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	notSocket := filepath.Join(t.TempDir(), "file")
	writeFile(t, notSocket, "x")
	badCreds := filepath.Join(t.TempDir(), "creds.toml")
	writeFile(t, badCreds, "[[[")
	for _, tc := range []struct {
		name   string
		edit   func(*Config)
		want   string
		config bool // a *ConfigError
	}{
		{"listen taken", func(c *Config) { c.Listen = []string{"127.0.0.1:0", taken.Addr().String()} }, "--listen " + taken.Addr().String(), false},
		{"metrics taken", func(c *Config) { c.MetricsListen = taken.Addr().String() }, "--metrics-listen", false},
		{"not a socket", func(c *Config) { c.Listen = []string{"unix://" + notSocket} }, "is not a socket", false},
		{"data dir is a file", func(c *Config) { c.DataDir = filepath.Join(notSocket, "data") }, "--data-dir", false},
		{"credentials", func(c *Config) { c.CredentialsFile = badCreds }, "--credentials-file", true},
		{"docker config", func(c *Config) { c.DockerConfig = badCreds }, "--docker-config", true},
		{"peer secret", func(c *Config) {
			c.Peers, c.Advertise, c.PeerListen = []string{"127.0.0.2:5051"}, "127.0.0.1:5051", "127.0.0.1:0"
			c.PeerSecretFile = filepath.Join(t.TempDir(), "absent")
		}, "--peer-secret-file", true},
		{"peer listen taken", func(c *Config) {
			c.Peers, c.Advertise, c.PeerListen = []string{"127.0.0.2:5051"}, "127.0.0.1:5051", taken.Addr().String()
			c.PeerSecretFile = filepath.Join(t.TempDir(), "secret")
			writeFile(t, c.PeerSecretFile, "0123456789abcdef0123456789abcdef")
		}, "--peer-listen", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, up)
			tc.edit(&cfg)
			d, err := New(cfg, quietLogger())
			if err == nil {
				t.Fatalf("New = %v, want an error", d)
			}
			var ce *ConfigError
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || errors.As(err, &ce) != tc.config {
				t.Errorf("err = %q (ConfigError %v); want one line naming %s, ConfigError %v", err, errors.As(err, &ce), tc.want, tc.config)
			}
		})
	}
	// What a failed New opened is closed: the same address works again.
	cfg := testConfig(t, up)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg.Listen, cfg.CredentialsFile = []string{addr}, badCreds
	if _, err := New(cfg, quietLogger()); err == nil {
		t.Fatal("New accepted bad credentials")
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the failed New left %s open: %v", addr, err)
	}
	l.Close()
}
