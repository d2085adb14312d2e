package ctrdconf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCollectorFollowsTheFile: the gauge is read at each scrape, so it
// follows an edit of the file, and a file containerd cannot load counts.
func TestCollectorFollowsTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.toml")
	c := NewCollector(file, certsD)
	for _, step := range []struct {
		conf string
		want float64
	}{
		{"version = 3\n", 1},
		{"version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '" + certsD + "'\n", 0},
		{"version = [", 1},
	} {
		if err := os.WriteFile(file, []byte(step.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(c); got != step.want {
			t.Errorf("%q: nodecache_doctor_problems %v, want %v", step.conf, got, step.want)
		}
	}
	if n := testutil.CollectAndCount(c, "nodecache_doctor_problems"); n != 1 {
		t.Errorf("%d samples, want 1", n)
	}
}
