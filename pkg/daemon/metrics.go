package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
)

// newRegistry registers every metric the daemon exports: the mirror's,
// the store's, and the Go runtime and process collectors.
func newRegistry(m *mirror.Metrics, store *diskstore.Store, maxSize int64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(daemonCollectors(m, store, maxSize)...)
	return reg
}

func daemonCollectors(m *mirror.Metrics, store *diskstore.Store, maxSize int64) []prometheus.Collector {
	return []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m,
		&storeCollector{store: store, maxSize: maxSize},
	}
}

// storeCollector reads the store's counters at scrape time, so the store
// itself knows nothing of Prometheus.
type storeCollector struct {
	store   *diskstore.Store
	maxSize int64
}

var (
	storeSizeDesc = prometheus.NewDesc("nodecache_store_size_bytes",
		"Bytes of committed content in the store.", nil, nil)
	storeReservedDesc = prometheus.NewDesc("nodecache_store_reserved_bytes",
		"Bytes reserved by fills in progress.", nil, nil)
	storeMaxDesc = prometheus.NewDesc("nodecache_store_max_size_bytes",
		"The store's size bound (--max-size, resolved).", nil, nil)
	storeEntriesDesc = prometheus.NewDesc("nodecache_store_entries",
		"Committed entries (blobs and manifests) in the store.", nil, nil)
	storeEvictionsDesc = prometheus.NewDesc("nodecache_store_evictions_total",
		"Entries removed to stay within --max-size and --min-free.", nil, nil)
	storeExpirationsDesc = prometheus.NewDesc("nodecache_store_expirations_total",
		"Entries removed for being unused longer than --ttl.", nil, nil)
	storePassThroughDesc = prometheus.NewDesc("nodecache_store_uncached_fills_total",
		"Fills streamed to clients uncached: too large, disk full, or read-only store.", nil, nil)
	storeCorruptDesc = prometheus.NewDesc("nodecache_store_corrupt_entries_total",
		"Entries found not to match their digest, by the scrub or the re-check after a crash, and removed.", nil, nil)
	storeScrubbedDesc = prometheus.NewDesc("nodecache_store_scrubbed_bytes_total",
		"Bytes the scrub has re-hashed (--scrub-interval).", nil, nil)
	storeLoadingDesc = prometheus.NewDesc("nodecache_store_loading",
		"1 while the store's index loads in the background after a start (entries counts part of the store, nothing is evicted), 0 once loaded.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storeSizeDesc, storeReservedDesc, storeMaxDesc, storeEntriesDesc,
		storeEvictionsDesc, storeExpirationsDesc, storePassThroughDesc, storeCorruptDesc, storeScrubbedDesc, storeLoadingDesc} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(storeSizeDesc, float64(st.Bytes))
	gauge(storeReservedDesc, float64(st.Reserved))
	gauge(storeMaxDesc, float64(c.maxSize))
	gauge(storeEntriesDesc, float64(st.Entries))
	counter(storeEvictionsDesc, st.Evictions)
	counter(storeExpirationsDesc, st.Expirations)
	counter(storePassThroughDesc, st.PassThrough)
	counter(storeCorruptDesc, st.Corrupt)
	counter(storeScrubbedDesc, st.ScrubBytes)
	loading := 0.0
	if storeLoading(c.store) {
		loading = 1
	}
	gauge(storeLoadingDesc, loading)
}
