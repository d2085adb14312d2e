package mirror

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nodecache/internal/ociref"
	"nodecache/pkg/upstream"
)

// Request results, the result label of nodecache_http_requests_total.
const (
	resultHit      = "hit"      // served from the store
	resultMiss     = "miss"     // served from a fill, which the store keeps
	resultPeer     = "peer"     // served from a peer node
	resultUpstream = "upstream" // relayed from upstream, not kept
	resultError    = "error"    // an error answer (4xx, 5xx)
	resultCanceled = "canceled" // the client hung up before its answer was complete
)

// Metrics are the mirror's Prometheus metrics. Labels are routes, results
// and sources, never paths or digests, so the series count stays fixed.
// The caller registers them: Metrics is a prometheus.Collector.
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	servedBytes   *prometheus.CounterVec
	upstreamTime  *prometheus.HistogramVec
	upstreamBytes *prometheus.CounterVec
	fillsInFlight prometheus.Gauge
	fillJoins     prometheus.Counter
	fillsWaiting  prometheus.Gauge
	fillsUnread   prometheus.Counter
	staleTags     prometheus.Counter
	noRegistry    prometheus.Counter

	// The request series, bound once for every route, result and source
	// a request can have (a handful each), so that recording a request
	// costs no label hashing or lookup in the vectors.
	byRoute  map[string]*routeSeries
	bySource map[string]prometheus.Counter
}

// routeSeries are the request series of one route.
type routeSeries struct {
	requests map[string]prometheus.Counter // by result
	duration prometheus.Observer
}

// Every value the request labels take; observeRequest falls back to the
// vectors for any other.
var (
	requestRoutes = []string{"invalid", string(ociref.KindBase), string(ociref.KindManifests),
		string(ociref.KindBlobs), string(ociref.KindTags), string(ociref.KindReferrers)}
	requestResults = []string{resultHit, resultMiss, resultPeer, resultUpstream, resultError, resultCanceled}
	servedSources  = []string{"cache", "upstream", "peer"}
)

// bind binds the request series of requestRoutes, requestResults and
// servedSources.
func (m *Metrics) bind() *Metrics {
	m.byRoute = make(map[string]*routeSeries, len(requestRoutes))
	for _, route := range requestRoutes {
		rs := &routeSeries{requests: make(map[string]prometheus.Counter, len(requestResults)),
			duration: m.duration.WithLabelValues(route)}
		for _, result := range requestResults {
			rs.requests[result] = m.requests.WithLabelValues(route, result)
		}
		m.byRoute[route] = rs
	}
	m.bySource = make(map[string]prometheus.Counter, len(servedSources))
	for _, source := range servedSources {
		m.bySource[source] = m.servedBytes.WithLabelValues(source)
	}
	return m
}

// NewMetrics creates the mirror's metrics, unregistered.
func NewMetrics() *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_http_requests_total",
			Help: "Pull-path requests by route and result (hit, miss, peer, upstream, error, canceled).",
		}, []string{"route", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodecache_http_request_duration_seconds",
			Help:    "Time to serve a pull-path request, to its last byte.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5 ms to ~2 min
		}, []string{"route"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_served_bytes_total",
			Help: "Response body bytes sent to clients, by source (cache, upstream, peer).",
		}, []string{"source"}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodecache_upstream_fetch_duration_seconds",
			Help:    "Time of one upstream request, from sending it to the end of its body, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9), // 5 ms to ~5 min
		}, []string{"kind"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_upstream_bytes_total",
			Help: "Body bytes received from upstream registries, by kind.",
		}, []string{"kind"}),
		fillsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodecache_fills_in_flight",
			Help: "Upstream fetches being written into the store now.",
		}),
		fillJoins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_fill_waiters_joined_total",
			Help: "Requests that joined a fill another request started: upstream fetches saved.",
		}),
		fillsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodecache_fills_waiting",
			Help: "Fills waiting for a slot, beyond the bound on fills running at once.",
		}),
		fillsUnread: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_fills_stopped_unread_total",
			Help: "Fills stopped because no client read them for the grace period.",
		}),
		staleTags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_tag_stale_answers_total",
			Help: "Tag lookups answered from the last known digest because upstream failed.",
		}),
		noRegistry: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_requests_without_registry_total",
			Help: "Pull-path requests that named no registry (no ns, none in the path), served from --default-registry or refused.",
		}),
	}
	return m.bind()
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.servedBytes, m.upstreamTime,
		m.upstreamBytes, m.fillsInFlight, m.fillJoins, m.fillsWaiting, m.fillsUnread, m.staleTags, m.noRegistry}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// observeRequest records one finished request.
func (m *Metrics) observeRequest(route string, rec *recorder, took time.Duration) {
	result := rec.result
	if rec.status >= 400 && result != resultCanceled {
		result = resultError
	}
	if result == "" {
		result = resultUpstream
	}
	rs := m.byRoute[route]
	var requests prometheus.Counter
	if rs != nil {
		requests = rs.requests[result] // looked up once: every request ends here
	}
	if requests != nil {
		requests.Inc()
		rs.duration.Observe(took.Seconds())
	} else {
		m.requests.WithLabelValues(route, result).Inc()
		m.duration.WithLabelValues(route).Observe(took.Seconds())
	}
	if rec.bytes > 0 && rec.source != "none" {
		if c, ok := m.bySource[rec.source]; ok {
			c.Add(float64(rec.bytes))
		} else {
			m.servedBytes.WithLabelValues(rec.source).Add(float64(rec.bytes))
		}
	}
}

// countingUpstream measures every upstream request: its time to the end of
// the body and the body's bytes.
type countingUpstream struct {
	Upstream
	m *Metrics
}

func (u countingUpstream) Fetch(ctx context.Context, r upstream.Request) (*upstream.Response, error) {
	start := time.Now()
	resp, err := u.Upstream.Fetch(ctx, r)
	if err != nil {
		return nil, err
	}
	// The label is the URL path's word for the kind: "tags/list" for tags.
	resp.Body = &countingBody{ReadCloser: resp.Body, kind: r.Kind.Path(), start: start, m: u.m}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	kind  string
	start time.Time
	m     *Metrics
	n     atomic.Int64 // Close may come from another goroutine than Read
	done  atomic.Bool  // observed once
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.observe() // at the end, before a fill commits what it read
	}
	return n, err
}

func (b *countingBody) Close() error {
	b.observe() // a body left before its end
	return b.ReadCloser.Close()
}

func (b *countingBody) observe() {
	if b.done.CompareAndSwap(false, true) {
		b.m.upstreamTime.WithLabelValues(b.kind).Observe(time.Since(b.start).Seconds())
		b.m.upstreamBytes.WithLabelValues(b.kind).Add(float64(b.n.Load()))
	}
}

// The methods below are safe on a nil *Metrics, so call sites need no
// check when metrics are off.

func (m *Metrics) joinedFill() {
	if m != nil {
		m.fillJoins.Inc()
	}
}

func (m *Metrics) fillStarted() {
	if m != nil {
		m.fillsInFlight.Inc()
	}
}

func (m *Metrics) fillEnded() {
	if m != nil {
		m.fillsInFlight.Dec()
	}
}

// fillWaiting adds delta to the fills waiting for a slot.
func (m *Metrics) fillWaiting(delta float64) {
	if m != nil {
		m.fillsWaiting.Add(delta)
	}
}

func (m *Metrics) fillUnread() {
	if m != nil {
		m.fillsUnread.Inc()
	}
}

func (m *Metrics) staleTag() {
	if m != nil {
		m.staleTags.Inc()
	}
}

func (m *Metrics) requestWithoutRegistry() {
	if m != nil {
		m.noRegistry.Inc()
	}
}
