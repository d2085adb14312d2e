package rss

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

const (
	// blobSize and clients are the load: 64 clients each streaming a
	// 256 MiB blob, 16 GiB per phase. A daemon that buffered whole blobs,
	// even once, would show it at once.
	blobSize = 256 << 20
	clients  = 64
	// upstreamRate makes the fill last about two seconds, so that every
	// client of the cold phase attaches to a fill still in progress.
	upstreamRate = 128 << 20
	// sampleEvery is how often the daemon's VmRSS is read.
	sampleEvery = 50 * time.Millisecond
)

// TestMain removes, at the end, the daemon daemontest.Binary built.
func TestMain(m *testing.M) { daemontest.Main(m) }

// BenchmarkDaemonRSS reports the daemon's peak RSS, sampled and as VmHWM,
// during a cold phase (64 clients attached to the first fill) and a warm
// phase (64 clients served from the cache). It measures once whatever b.N
// is; run it with -benchtime 1x.
func BenchmarkDaemonRSS(b *testing.B) {
	bin := daemontest.Binary(b)
	up := registrytest.Start(b, registrytest.WithThrottle(upstreamRate))
	d := up.PushBlob(b, "bench/rss", registrytest.Random(42, blobSize))
	proc := daemontest.MustStart(b, bin, "--data-dir", b.TempDir(),
		"--registry", up.Host()+"="+up.URL(), "--default-registry", up.Host(), "--log-level", "warn")
	pid := proc.Cmd.Process.Pid
	url := proc.URL + "/v2/bench/rss/blobs/" + d.String()
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: clients, DisableCompression: true,
	}}
	b.Cleanup(client.CloseIdleConnections)

	idle, err := readStatus(pid, "VmRSS")
	if err != nil {
		b.Fatal(err)
	}
	for _, phase := range []string{"cold", "warm"} {
		p, err := measure(pid, func() error { return getAll(client, url) })
		if err != nil {
			b.Fatalf("%s: %v", phase, err)
		}
		b.ReportMetric(mib(p.peak), phase+"-peak-RSS-MiB")
		if p.hwm > 0 {
			b.ReportMetric(mib(p.hwm), phase+"-VmHWM-MiB")
		}
		b.ReportMetric(p.elapsed.Seconds(), phase+"-s")
		b.Logf("%s: %d clients x %d MiB in %v, peak VmRSS %.1f MiB, VmHWM %.1f MiB (%d samples)",
			phase, clients, blobSize>>20, p.elapsed.Round(time.Millisecond), mib(p.peak), mib(p.hwm), p.samples)
	}
	b.ReportMetric(mib(idle), "idle-RSS-MiB")
}

// getAll has every client GET url at once and read it to the end.
func getAll(c *http.Client, url string) error {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			resp, err := c.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && (resp.StatusCode != http.StatusOK || n != blobSize) {
				err = fmt.Errorf("status %d, %d bytes, want 200 and %d", resp.StatusCode, n, blobSize)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// phase is what measure saw.
type phase struct {
	peak, hwm int64 // bytes; hwm is 0 if the peak could not be reset
	samples   int
	elapsed   time.Duration
}

// measure runs load while sampling the VmRSS of pid. Before, it resets the
// process's peak (VmHWM) through clear_refs, so that VmHWM afterwards is
// this phase's own peak.
func measure(pid int, load func() error) (phase, error) {
	var p phase
	resetHWM := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	ctx, cancel := context.WithCancel(context.Background())
	sampled := make(chan error, 1)
	go func() {
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			rss, err := readStatus(pid, "VmRSS")
			if err != nil {
				sampled <- err
				return
			}
			p.peak = max(p.peak, rss)
			p.samples++
			select {
			case <-ctx.Done():
				sampled <- nil
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	err := load()
	p.elapsed = time.Since(start)
	cancel()
	if serr := <-sampled; err == nil {
		err = serr
	}
	if err != nil {
		return p, err
	}
	if resetHWM == nil {
		p.hwm, err = readStatus(pid, "VmHWM")
	}
	return p, err
}

// readStatus returns a "kB" field of /proc/<pid>/status, in bytes.
func readStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s in /proc/%d/status: %w", field, pid, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
