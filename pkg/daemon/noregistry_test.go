package daemon

import (
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/mirror"
)

// TestNoDefaultRegistry: with --default-registry none, a request that
// names no registry is refused with an error naming the flag, and
// counted; naming the registry in ns or in the path pulls.
func TestNoDefaultRegistry(t *testing.T) {
	up := registrytest.Start(t)
	d := up.PushBlob(t, "team/app", registrytest.Random(3, 4096))
	cfg := testConfig(t, up)
	cfg.DefaultRegistry = mirror.NoDefaultRegistry
	addrs := start(t, cfg).Addrs()
	base, metrics := "http://"+addrs.Mirror[0], "http://"+addrs.Metrics[0]

	if code, body := get(t, base+"/v2/team/app/blobs/"+d.String()); code != http.StatusNotFound || !strings.Contains(body, "--default-registry") {
		t.Errorf("no registry named: %d %s, want 404 naming --default-registry", code, body)
	}
	for _, path := range []string{
		"/v2/team/app/blobs/" + d.String() + "?ns=" + up.Host(),
		"/v2/" + up.Host() + "/team/app/blobs/" + d.String(),
	} {
		if code, body := get(t, base+path); code != http.StatusOK || digest.FromString(body) != d {
			t.Errorf("GET %s: %d, content %s", path, code, digest.FromString(body))
		}
	}
	if _, body := get(t, metrics+"/metrics"); !strings.Contains(body, "\nnodecache_requests_without_registry_total 1\n") {
		t.Error("GET /metrics: nodecache_requests_without_registry_total is not 1")
	}
}
