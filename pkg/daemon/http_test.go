package daemon

import (
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzPullPathSkipsNoProbe: a path withMirror sends straight to the
// mirror is one the probes' mux would not have served (no pattern, no
// redirect to a probe), for any method.
func FuzzPullPathSkipsNoProbe(f *testing.F) {
	for _, p := range []string{"/v2/", "/v2/a/manifests/v1", "/v2/../healthz", "/v2//healthz", "/v2/./metrics", "/healthz", "/v2/%2e%2e/readyz", "/v2/a/.."} {
		f.Add(p, "GET")
	}
	probes := newProbes(new(atomic.Bool), prometheus.NewRegistry())
	f.Fuzz(func(t *testing.T, path, method string) {
		if !pullPath(path) {
			return
		}
		u, err := url.Parse("http://node" + path)
		if err != nil || u.Path != path {
			return // not a path a request can carry as it is
		}
		r := &http.Request{Method: method, URL: u, Host: "node"}
		if _, pattern := probes.Handler(r); pattern != "" {
			t.Fatalf("%s %s goes to the mirror, but the probes match it (%q)", method, path, pattern)
		}
	})
}
