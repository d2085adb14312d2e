package mirror

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBoundSeriesCount: a request counts in the same series whether its
// labels were bound in advance or not, and the bound series cover every
// route, result and source the handler sets.
func TestBoundSeriesCount(t *testing.T) {
	m := NewMetrics()
	for _, c := range []struct {
		route, result, source string
		status                int
	}{
		{"manifests", resultHit, "cache", 200},
		{"blobs", resultMiss, "upstream", 200},
		{"blobs", "", "none", 404},
		{"some-other-route", resultPeer, "elsewhere", 200},
	} {
		rec := &recorder{ResponseWriter: httptest.NewRecorder(), status: c.status, bytes: 10, source: c.source, result: c.result}
		m.observeRequest(c.route, rec, time.Millisecond)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"manifests/hit", testutil.ToFloat64(m.requests.WithLabelValues("manifests", resultHit)), 1},
		{"blobs/miss", testutil.ToFloat64(m.requests.WithLabelValues("blobs", resultMiss)), 1},
		{"blobs/error", testutil.ToFloat64(m.requests.WithLabelValues("blobs", resultError)), 1},
		{"unbound route", testutil.ToFloat64(m.requests.WithLabelValues("some-other-route", resultPeer)), 1},
		{"cache bytes", testutil.ToFloat64(m.servedBytes.WithLabelValues("cache")), 10},
		{"upstream bytes", testutil.ToFloat64(m.servedBytes.WithLabelValues("upstream")), 10},
		{"unbound source bytes", testutil.ToFloat64(m.servedBytes.WithLabelValues("elsewhere")), 10},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != len(requestRoutes)+1 {
		t.Errorf("%d duration series, want the %d bound and the unbound one", n, len(requestRoutes))
	}
}
