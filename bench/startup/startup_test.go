package startup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"nodecache/internal/daemontest"
)

// manifestEvery is how many entries there are per manifest (an entry
// with a media type sidecar): images have a few manifests and many
// layers.
const manifestEvery = 20

// fixtureVersion names the file that marks a complete fixture; a change
// to how fixtures are built changes it, and the next run rebuilds them.
const fixtureVersion = "fixture-v2"

// TestMain removes, at the end, the daemon daemontest.Binary built.
func TestMain(m *testing.M) { daemontest.Main(m) }

// BenchmarkStartup reports, for the daemon over a store of 200k and of 1M
// entries after a clean stop: exec to ready (/readyz answers 200; the
// store serves every entry from then on, its index loading in the
// background), exec to loaded (the "store loaded" log line: the index
// holds every entry), and the RSS once ready and once loaded, and the
// peak (VmHWM). It measures once whatever b.N is; run it with
// -benchtime 1x.
func BenchmarkStartup(b *testing.B) {
	bin := daemontest.Binary(b)
	for _, n := range []int{200_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			dir := fixture(b, n)
			// Close leaves the clean mark with the bytes stored (the
			// entries are empty files); put it there for a store that
			// was never opened, or was killed.
			if err := os.WriteFile(filepath.Join(dir, "clean"), []byte("0\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			// No scrub: it would find the synthetic entries corrupt and
			// remove them. Info level for the "store loaded" line.
			p, err := daemontest.Start(b.Context(), bin, "--data-dir", dir, "--log-level", "info", "--scrub-interval", "0")
			ready := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			readyRSS, rerr := readStatus(p.Cmd.Process.Pid, "VmRSS")
			lerr := p.WaitOutput(b.Context(), "store loaded")
			loaded := time.Since(start)
			rss, err := readStatus(p.Cmd.Process.Pid, "VmRSS")
			hwm, herr := readStatus(p.Cmd.Process.Pid, "VmHWM")
			if serr := p.Stop(); serr != nil {
				b.Error(serr)
			}
			if got := entriesIn(b, dir); got != n {
				b.Fatalf("the store holds %d entries after the run, want %d", got, n)
			}
			if err := errors.Join(rerr, lerr, err, herr); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(ready.Seconds(), "s-to-ready")
			b.ReportMetric(loaded.Seconds(), "s-to-loaded")
			b.ReportMetric(float64(readyRSS)/(1<<20), "RSS-ready-MiB")
			b.ReportMetric(float64(rss)/(1<<20), "RSS-MiB")
			b.ReportMetric(float64(hwm)/(1<<20), "VmHWM-MiB")
			b.Logf("%d entries: ready %v after exec (RSS %.1f MiB), loaded %v after exec (RSS %.1f MiB), peak %.1f MiB",
				n, ready.Round(time.Millisecond), float64(readyRSS)/(1<<20), loaded.Round(time.Millisecond),
				float64(rss)/(1<<20), float64(hwm)/(1<<20))
		})
	}
}

// fixture returns a store directory of n entries, building it the first
// time: empty files named by distinct sha256 digests, with mtimes spread
// over the last day (the recency order the index is sorted by), one in
// manifestEvery with a media type. Building over an older fixture
// rewrites every entry.
func fixture(b *testing.B, n int) string {
	dir := filepath.Join(os.TempDir(), "nodecache-startup", fmt.Sprint(n))
	done := filepath.Join(dir, fixtureVersion)
	if _, err := os.Stat(done); err == nil {
		return dir
	}
	b.Logf("building a store of %d entries in %s (kept for the next run)", n, dir)
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	// Used over the last day: well within any idle TTL, so that the
	// daemon's sweep at start keeps them all.
	base, step := time.Now().Add(-24*time.Hour), 24*time.Hour/time.Duration(n)
	workers := runtime.GOMAXPROCS(0) * 2
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := entry(dir, i, base.Add(time.Duration(i)*step)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(done, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// entry writes the i-th synthetic entry.
func entry(dir string, i int, mtime time.Time) error {
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	sum := sha256.Sum256(seed[:])
	hex := hex.EncodeToString(sum[:])
	p := filepath.Join(dir, "blobs", "sha256", hex[:2], hex)
	if i%manifestEvery == 0 {
		if err := os.WriteFile(p+".type", []byte("application/vnd.oci.image.manifest.v1+json"), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	return os.Chtimes(p, mtime, mtime)
}

// entriesIn counts the content files of the store in dir.
func entriesIn(b *testing.B, dir string) int {
	n := 0
	shards, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "??"))
	if err != nil {
		b.Fatal(err)
	}
	for _, shard := range shards {
		names, err := os.ReadDir(shard)
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range names {
			if !strings.HasSuffix(name.Name(), ".type") {
				n++
			}
		}
	}
	return n
}

// readStatus returns a "kB" field of /proc/<pid>/status, in bytes.
func readStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	var kb int64
	for _, line := range strings.Split(string(data), "\n") {
		if _, err := fmt.Sscanf(line, field+": %d kB", &kb); err == nil {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
