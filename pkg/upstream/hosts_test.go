package upstream

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"

	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

// writeHosts writes dir/<registry>/hosts.toml and returns dir.
func writeHosts(t *testing.T, registry, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, registry), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, registry, "hosts.toml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// headerLog records one header and the query of every request a registry
// receives.
type headerLog struct {
	mu      sync.Mutex // guards values, queries
	values  []string
	queries []string
}

func (l *headerLog) fault(name string) registrytest.Fault {
	return func(_ http.ResponseWriter, r *http.Request) bool {
		l.mu.Lock()
		l.values = append(l.values, r.Header.Get(name))
		l.queries = append(l.queries, r.URL.RawQuery)
		l.mu.Unlock()
		return false
	}
}

func (l *headerLog) get() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.values...), append([]string(nil), l.queries...)
}

func hostsClient(t *testing.T, dir string, self []string, endpoints map[string]string) *Client {
	t.Helper()
	c, err := New(endpoints, WithHostsDir(dir, self), WithSleep(new(sleeps).sleep))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHostsDirMirrorFallsBackToServer(t *testing.T) {
	server := registrytest.Start(t)
	data := registrytest.Random(1, 5000)
	d := server.PushBlob(t, "team/app", data)
	var mlog headerLog
	mirror := registrytest.Start(t, registrytest.WithFault(mlog.fault("X-Mirror-Token")))
	failing := registrytest.Start(t, registrytest.WithFault(registrytest.FailWith(503, nil)))
	self := registrytest.Start(t)

	dir := writeHosts(t, testRegistry, fmt.Sprintf(`server = %q

[host.%q]
  capabilities = ["pull", "resolve"]

[host.%q]
  capabilities = ["pull", "resolve"]
  header = { X-Mirror-Token = "m-1" }

[host.%q]
  capabilities = ["pull", "resolve"]
`, server.URL(), "http://localhost:"+portOf(t, self.URL()), mirror.URL(), failing.URL()))
	c := hostsClient(t, dir, []string{"[::]:" + portOf(t, self.URL())}, nil)

	r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindBlobs, Ref: d.String(), Method: http.MethodGet}
	resp, err := c.Do(testCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != string(data) {
		t.Fatalf("got %d with %d bytes, want the blob", resp.StatusCode, len(body))
	}
	if n := self.Count(http.MethodGet, registrytest.KindBlobs); n != 0 {
		t.Errorf("the entry pointing at ourselves got %d requests", n)
	}
	values, queries := mlog.get()
	if len(values) != 1 || values[0] != "m-1" {
		t.Errorf("mirror saw X-Mirror-Token %q, want one request with m-1", values)
	}
	if len(queries) != 1 || queries[0] != "ns="+testRegistry {
		t.Errorf("mirror saw queries %q, want ns=%s", queries, testRegistry)
	}
	if n := failing.Count(http.MethodGet, registrytest.KindBlobs); n != maxAttempts {
		t.Errorf("failing mirror got %d requests, want %d (its retry budget)", n, maxAttempts)
	}
	if n := server.BlobGets(d); n != 1 {
		t.Errorf("server got %d requests, want 1", n)
	}
}

func TestHostsDirCapabilities(t *testing.T) {
	server := registrytest.Start(t)
	img := server.PushSingleImage(t, "team/app", "v1", 100)
	pullOnly := registrytest.Start(t)
	dir := writeHosts(t, testRegistry, fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\"]\n", server.URL(), pullOnly.URL()))
	c := hostsClient(t, dir, nil, nil)
	r := manifestRequest("team/app", "v1")
	r.Header = http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	if got := mustDo(t, c, r); got != 200 {
		t.Fatalf("status %d", got)
	}
	if n := pullOnly.ManifestRequests(http.MethodGet); n != 0 {
		t.Errorf("a pull-only mirror was asked to resolve a tag (%d requests)", n)
	}
	r.Ref = img.Manifests["linux/amd64"].String()
	mustDo(t, c, r)
	if n := pullOnly.ManifestRequests(http.MethodGet); n != 1 {
		t.Errorf("pull-only mirror got %d by-digest requests, want 1", n)
	}
}

func TestHostsDirTLS(t *testing.T) {
	ok := &okHandler{}
	srv := httptest.NewUnstartedServer(ok)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing case's handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		extra   string
		wantErr bool
	}{
		{"with ca", fmt.Sprintf("ca = %q\n", ca), false},
		{"without ca", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeHosts(t, testRegistry, fmt.Sprintf("server = %q\n%s", srv.URL, tt.extra))
			c := hostsClient(t, dir, nil, nil)
			resp, err := c.Do(testCtx(t), manifestRequest("x/y", "v1"))
			if tt.wantErr {
				if !errors.Is(err, ErrUnreachable) {
					t.Fatalf("err = %v, want ErrUnreachable (unknown CA)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			discard(resp)
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
}

func TestExplicitEndpointWinsOverHostsDir(t *testing.T) {
	viaHosts := registrytest.Start(t)
	explicit := registrytest.Start(t)
	dir := writeHosts(t, testRegistry, fmt.Sprintf("server = %q\n", viaHosts.URL()))
	c := hostsClient(t, dir, nil, map[string]string{testRegistry: explicit.URL()})
	mustDo(t, c, manifestRequest("team/app", "v1"))
	if a, b := viaHosts.ManifestRequests(http.MethodGet), explicit.ManifestRequests(http.MethodGet); a != 0 || b != 1 {
		t.Errorf("hosts.toml server got %d, explicit endpoint %d; want 0 and 1", a, b)
	}
}

func TestHostsDirAllSelf(t *testing.T) {
	dir := writeHosts(t, testRegistry, "server = \"http://127.0.0.1:5000\"\n")
	c := hostsClient(t, dir, []string{"0.0.0.0:5000"}, nil)
	_, err := c.Do(testCtx(t), manifestRequest("team/app", "v1"))
	if !errors.Is(err, ErrInvalidEndpoint) {
		t.Fatalf("err = %v, want ErrInvalidEndpoint", err)
	}
}

func TestLoopGuard(t *testing.T) {
	tests := []struct {
		self   []string
		scheme string
		host   string
		path   string
		want   bool
	}{
		{[]string{":5000"}, "http", "localhost:5000", "/v2", true},
		{[]string{":5000"}, "http", "127.0.0.1:5000", "/v2", true},
		{[]string{":5000"}, "http", "[::1]:5000", "/v2", true},
		{[]string{"127.0.0.1:5000"}, "http", "localhost:5000", "/v2", true},
		{[]string{"[::]:5000"}, "http", "0.0.0.0:5000", "/v2", true},
		{[]string{"127.0.0.1:80"}, "http", "localhost", "/v2", true},
		{[]string{"127.0.0.1:443"}, "https", "LOCALHOST", "/v2", true},
		{[]string{":5000"}, "http", "localhost:5001", "/v2", false},
		{[]string{"127.0.0.1:5000"}, "http", "registry.example:5000", "/v2", false},
		{[]string{"10.1.2.3:5000"}, "http", "10.1.2.3:5000", "/v2", true},
		{[]string{"10.1.2.3:5000"}, "http", "127.0.0.1:5000", "/v2", false},
		{[]string{"unix:///run/nodecache.sock"}, "https", "unix:", "/run/nodecache.sock/v2", true},
		{[]string{"/run/nodecache.sock"}, "https", "unix:", "/run/other.sock/v2", false},
		{[]string{"garbage"}, "http", "garbage", "/v2", false},
		{nil, "http", "localhost:5000", "/v2", false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.self, ",")+" "+tt.host, func(t *testing.T) {
			h := docker.RegistryHost{Scheme: tt.scheme, Host: tt.host, Path: tt.path}
			if got := newLoopGuard(tt.self).isSelf(h); got != tt.want {
				t.Errorf("isSelf = %v, want %v", got, tt.want)
			}
		})
	}
}

func portOf(t *testing.T, rawURL string) string {
	t.Helper()
	return mustParse(t, rawURL).Port()
}
