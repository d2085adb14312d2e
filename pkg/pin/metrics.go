package pin

import "github.com/prometheus/client_golang/prometheus"

var (
	imagesDesc = prometheus.NewDesc("nodecache_pin_images",
		"Image references pinned by --pin-file.", nil, nil)
	bytesDesc = prometheus.NewDesc("nodecache_pinned_bytes",
		"Bytes of the pinned images, each blob counted once, as their manifests declare them.", nil, nil)
	overDesc = prometheus.NewDesc("nodecache_pins_over_max_size",
		"1 if the pinned images alone exceed --max-size: they are kept and other fills stream uncached.", nil, nil)
	failedDesc = prometheus.NewDesc("nodecache_pin_failed_images",
		"Pinned references the last pass could not resolve or walk; they keep what they held.", nil, nil)
	missingDesc = prometheus.NewDesc("nodecache_pin_missing_blobs",
		"Blobs of pinned images the store did not hold after the last pass.", nil, nil)
)

// Describe and Collect make a Manager a prometheus.Collector of the last
// pass's outcome.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{imagesDesc, bytesDesc, overDesc, failedDesc, missingDesc} {
		ch <- d
	}
}

// Collect reports the outcome of the last Reconcile.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	st := m.State()
	over := 0.0
	if st.Over {
		over = 1
	}
	for _, v := range []struct {
		d *prometheus.Desc
		v float64
	}{{imagesDesc, float64(st.Images)}, {bytesDesc, float64(st.Bytes)}, {overDesc, over},
		{failedDesc, float64(st.Failed)}, {missingDesc, float64(st.Missing)}} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.GaugeValue, v.v)
	}
}
