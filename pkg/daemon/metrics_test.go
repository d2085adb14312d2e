package daemon

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"nodecache/internal/ctrdconf"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/peer"
	"nodecache/pkg/pin"
	"nodecache/pkg/upstream"
)

// TestDashboardUsesRealMetrics: every nodecache_* series the shipped
// Grafana dashboard queries is one the daemon registers, peers included,
// so a renamed metric cannot leave a panel silently empty.
func TestDashboardUsesRealMetrics(t *testing.T) {
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("a-secret-of-enough-bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret, err := peer.LoadSecret(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	health := peer.NewHealth()
	members, err := peer.NewMembership("127.0.0.1:5051", peer.Sources{Static: []string{"127.0.0.2:5051"}}, health)
	if err != nil {
		t.Fatal(err)
	}
	parts := &peerParts{members: members, secret: secret, client: peer.NewClient(secret, health)}
	all := append(daemonCollectors(mirror.NewMetrics(), store, 1<<30),
		parts.collectors(peer.NewHandler(secret, func(string) bool { return true }, nil))...)
	// The collectors newServers registers besides: the upstream client's,
	// the pins', the containerd check's, and CountLogDrops's.
	client, err := upstream.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	all = append(all, client, pin.New(filepath.Join(dir, "pins"), nil, nil),
		ctrdconf.NewCollector(filepath.Join(dir, "config.toml"), dir), NewLogWriter(io.Discard, -1).drops)

	// A Desc names its metric only in its String form.
	fqName := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	registered := map[string]bool{}
	ch := make(chan *prometheus.Desc, 1024)
	go func() {
		defer close(ch)
		for _, c := range all {
			c.Describe(ch)
		}
	}()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			registered[m[1]] = true
		}
	}
	if !registered["nodecache_http_requests_total"] || !registered["nodecache_peers"] {
		t.Fatalf("the registry's names were not read: %v", registered)
	}

	raw, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`nodecache_[a-z_]+`).FindAllString(string(raw), -1)
	if len(used) == 0 {
		t.Fatal("the dashboard queries no nodecache metric")
	}
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] {
				base = b
			}
		}
		if !registered[base] {
			t.Errorf("the dashboard queries %s, which the daemon does not export", name)
		}
	}
}

// TestCorruptEntriesAreCounted: an entry found bad (here by the re-check
// of recent entries after a crash) shows in the store's metrics.
func TestCorruptEntriesAreCounted(t *testing.T) {
	dir := t.TempDir()
	store, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a layer that will rot on the disk")
	d := digest.FromBytes(data)
	f, err := store.Begin(d, int64(len(data)), diskstore.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	if err := os.WriteFile(path, []byte("a layer that will rot on the disK"), 0o600); err != nil {
		t.Fatal(err)
	}
	// As after a crash: no clean stop recorded.
	if err := os.Remove(filepath.Join(dir, "clean")); err != nil {
		t.Fatal(err)
	}
	if store, err = diskstore.Open(dir); err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	families, err := newRegistry(mirror.NewMetrics(), store, 1<<30).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64 = -1
	for _, f := range families {
		if f.GetName() == "nodecache_store_corrupt_entries_total" {
			got = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 1 {
		t.Fatalf("nodecache_store_corrupt_entries_total = %v, want 1", got)
	}
}
