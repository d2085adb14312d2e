package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/pin"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestAdminRefusesBadInput: bad input to the admin API gets the OCI error
// JSON, and the daemon keeps serving.
func TestAdminRefusesBadInput(t *testing.T) {
	up := registrytest.Start(t)
	d := start(t, testConfig(t, up))
	admin := "http://" + d.Addrs().Metrics[0]
	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/admin/committed", "not json", http.StatusBadRequest, "DIGEST_INVALID"},
		{"/admin/committed", `{"digests":["sha256:nothex"]}`, http.StatusBadRequest, "DIGEST_INVALID"},
		{"/admin/committed", `{"digests":["` + strings.Repeat("x", maxAdminBody) + `"]}`, http.StatusBadRequest, "DIGEST_INVALID"},
		{"/admin/evict?ref=Not%20A%20Ref", "", http.StatusBadRequest, "NAME_INVALID"},
		{"/admin/evict?ref=" + up.Host() + "/none:v1", "", http.StatusNotFound, "MANIFEST_UNKNOWN"},
	} {
		status, body := post(t, admin+tc.path, tc.body)
		var e struct{ Errors []struct{ Code string } }
		if status != tc.status || json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code {
			t.Errorf("POST %s: %d %.200s; want %d %s", tc.path, status, body, tc.status, tc.code)
		}
	}
	status, body := post(t, admin+"/admin/committed", `{"digests":[]}`)
	if status != http.StatusOK || !strings.Contains(body, `"missing":[]`) {
		t.Errorf("an empty list: %d %s", status, body)
	}
	if code, _ := get(t, "http://"+d.Addrs().Mirror[0]+"/admin/images"); code == http.StatusOK {
		t.Error("the mirror listener serves the admin API")
	}
}

// TestAdminUnderConcurrentPulls lists and evicts while images are pulled
// through the mirror, under the race detector.
func TestAdminUnderConcurrentPulls(t *testing.T) {
	up := registrytest.Start(t)
	var imgs []registrytest.Image
	for i := range 4 {
		imgs = append(imgs, up.PushSingleImage(t, "apps/r", "v"+string(rune('0'+i)), 3000))
	}
	d := start(t, testConfig(t, up))
	admin := "http://" + d.Addrs().Metrics[0]
	src, err := pin.NewHTTPSource(d.Addrs().Mirror[0])
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, img := range imgs {
		wg.Go(func() {
			ref := pin.Ref{Registry: up.Host(), Repository: img.Repo, Tag: img.Tag}
			w, err := pin.Walk(context.Background(), src, ref, nil)
			if err != nil {
				t.Error(err)
				return
			}
			for _, b := range w.Blobs {
				if err := src.Pull(context.Background(), ref, b, nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		// Not get and post: they call Fatal, which only the test's own
		// goroutine may.
		for range 10 {
			resp, err := http.Get(admin + "/admin/images")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("GET /admin/images: %v %v", resp, err)
				return
			}
			resp.Body.Close()
			resp, err = http.Post(admin+"/admin/evict?ref="+up.Host()+"/apps/r:v0", "", nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}
	})
	wg.Wait()
}

func TestPinSettingsAreChecked(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	writeFile(t, good, "registry.k8s.io/pause:3.10\n")
	writeFile(t, bad, "# pins\nregistry.k8s.io/pause:3.10\nNOT/a ref\n")
	up := registrytest.Start(t)
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string // in the error; "" for none
	}{
		{"a good file", func(c *Config) { c.PinFile = good; c.PinPlatforms = []string{"linux/arm64/v8"} }, ""},
		{"a missing file", func(c *Config) { c.PinFile = filepath.Join(dir, "none") }, "--pin-file"},
		{"a bad line", func(c *Config) { c.PinFile = bad }, "line 3"},
		{"a bad platform", func(c *Config) { c.PinFile = good; c.PinPlatforms = []string{"linux/amd64/v1/x"} }, "--pin-platform"},
		{"a platform without a file", func(c *Config) { c.PinPlatforms = []string{"linux/amd64"} }, "--pin-platform: needs --pin-file"},
		{"a negative refresh", func(c *Config) { c.PinFile = good; c.PinRefresh = -1 }, "--pin-refresh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, up)
			tc.set(&cfg)
			err := cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestAdminOnlyForThisNode: the admin API answers clients on this node
// (a unix socket, loopback, a host-network process dialing the node's own
// address) and refuses every other, as a pod would be on a metrics
// listener on the node IP.
func TestAdminOnlyForThisNode(t *testing.T) {
	nodeIP := &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 9402}
	unix := &net.UnixAddr{Name: "/run/nodecache/metrics.sock", Net: "unix"}
	for _, tc := range []struct {
		name   string
		remote string
		local  net.Addr
		want   bool
	}{
		{"unix socket", "@", unix, true},
		{"loopback v4", "127.0.0.1:40000", &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9402}, true},
		{"loopback v6", "[::1]:40000", &net.TCPAddr{IP: net.ParseIP("::1"), Port: 9402}, true},
		{"the node IP from itself", "10.0.0.1:40000", nodeIP, true},
		{"the node IP from itself, v4 in v6", "[::ffff:10.0.0.1]:40000", nodeIP, true},
		{"a pod", "10.244.1.7:40000", nodeIP, false},
		{"another node", "10.0.0.2:40000", nodeIP, false},
		{"no local address", "10.0.0.1:40000", nil, false},
		{"not an address", "nonsense", nodeIP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromSameHost(tc.remote, tc.local); got != tc.want {
				t.Fatalf("fromSameHost(%q, %v) = %v, want %v", tc.remote, tc.local, got, tc.want)
			}
		})
	}
	mux := http.NewServeMux()
	(&admin{}).register(mux)
	for _, path := range []string{"/admin/images", "/admin/evict?ref=x", "/admin/committed"} {
		method := http.MethodPost
		if path == "/admin/images" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, path, strings.NewReader("{}"))
		req.RemoteAddr = "10.244.1.7:40000"
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(nodeIP)))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"DENIED"`) {
			t.Errorf("%s %s from a pod: %d %s, want 403 DENIED", method, path, rec.Code, rec.Body.String())
		}
	}
}

// TestNoPinFileLetsGoOfSavedPins: a daemon started without --pin-file
// lets go of the pins an earlier run saved, which nothing would release.
func TestNoPinFileLetsGoOfSavedPins(t *testing.T) {
	up := registrytest.Start(t)
	cfg := testConfig(t, up)
	store, err := diskstore.Open(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetPins([]digest.Digest{digest.FromString("pinned by an earlier run")}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	d := start(t, cfg)
	if pins := d.store.Pins(); len(pins) != 0 {
		t.Fatalf("pins without --pin-file: %v", pins)
	}
}
