package mirror

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/registrytest"
)

// TestMetricsCountWhatHappened: three clients share one cold fill (one
// miss that started it, two that joined), a fourth request is a hit, an
// unknown blob is an error; bytes are counted by source and upstream kind.
func TestMetricsCountWhatHappened(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	e := newEnv(t, nil, WithMetrics(m))
	data := registrytest.Random(7, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)

	// Upstream sends a quarter of the blob and waits: every client that
	// got its headers is then attached to the one fill.
	rest := make(chan struct{})
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/test/app/blobs/"+d.String() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/4])
		w.(http.Flusher).Flush()
		<-rest
		w.Write(data[len(data)/4:])
		return true
	})
	url := e.url("/v2/test/app/blobs/" + d.String())
	const clients = 3
	var bodies []io.ReadCloser
	for range clients {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		bodies = append(bodies, resp.Body)
	}
	close(rest)
	for _, b := range bodies {
		got, err := io.ReadAll(b)
		b.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes: %v", len(got), err)
		}
	}
	for range clients {
		<-e.served
	}
	if resp, body := e.do(http.MethodGet, url, nil); resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("warm GET: status %d", resp.StatusCode)
	}
	<-e.served
	missing := registrytest.Random(8, 10)
	e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+digest.FromBytes(missing).String()), nil)
	<-e.served

	size := float64(len(data))
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"requests blobs/miss", testutil.ToFloat64(m.requests.WithLabelValues("blobs", resultMiss)), clients},
		{"requests blobs/hit", testutil.ToFloat64(m.requests.WithLabelValues("blobs", resultHit)), 1},
		{"requests blobs/error", testutil.ToFloat64(m.requests.WithLabelValues("blobs", resultError)), 1},
		{"fill joins", testutil.ToFloat64(m.fillJoins), clients - 1},
		{"fills in flight", testutil.ToFloat64(m.fillsInFlight), 0},
		{"served from upstream", testutil.ToFloat64(m.servedBytes.WithLabelValues("upstream")), clients * size},
		{"served from cache", testutil.ToFloat64(m.servedBytes.WithLabelValues("cache")), size},
		{"upstream blob bytes", testutil.ToFloat64(m.upstreamBytes.WithLabelValues("blobs")), size},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// The registry lints the metrics (names, help, units) as a scrape would.
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
