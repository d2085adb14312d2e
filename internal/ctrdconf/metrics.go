package ctrdconf

import "github.com/prometheus/client_golang/prometheus"

// Collector exports nodecache_doctor_problems: how many settings of
// containerd's configuration file would send CRI pulls around the hosts
// directory, by Check, with the containerd version unknown. It reads the
// file again at every scrape, so the gauge follows an edit (a file
// containerd cannot load counts as one problem). It does not run the
// containerd binary or follow imports; `nodecache doctor` does both, and
// checks each registry's hosts.toml too.
type Collector struct {
	file, hostsDir string
	desc           *prometheus.Desc
}

// NewCollector returns a Collector of file, for nodecache's hosts.toml
// files in hostsDir.
func NewCollector(file, hostsDir string) *Collector {
	return &Collector{file: file, hostsDir: hostsDir, desc: prometheus.NewDesc(
		"nodecache_doctor_problems",
		"Settings in containerd's configuration file that would send CRI pulls around nodecache's hosts directory (nodecache doctor lists them).",
		nil, prometheus.Labels{"file": file})}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	n := 1
	if conf, err := ReadFile(c.file, Version{}); err == nil {
		n = len(Check(conf, Version{}, c.hostsDir))
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}
