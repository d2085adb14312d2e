package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// options are the demo's settings.
type options struct {
	nodecache  string    // path of the nodecache binary
	rate       int64     // upstream bandwidth in bytes per second; 0 is unthrottled
	layerSizes []int64   // the layers of each platform
	out        io.Writer // where the demo tells what happens
}

// pullStats is one pull as the demo reports it.
type pullStats struct {
	pullResult
	took time.Duration
	// upstreamSent is the body bytes the upstream sent during the pull,
	// blobs and manifests; upstreamBlobBytes is the blob part of it.
	upstreamSent, upstreamBlobBytes int64
}

// report is what the three pulls did.
type report struct {
	cold, warm, offline pullStats
}

// demo runs the whole demo and cleans up after it: the daemon is stopped,
// the upstream closed and the temporary directory removed, whatever
// happens. It returns an error if any step does not behave as a
// pull-through cache should.
func demo(ctx context.Context, tb testing.TB, o options) (rep report, err error) {
	dir, err := os.MkdirTemp("", "nodecache-demo-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	up, img, err := startUpstream(tb, o.rate, o.layerSizes)
	if err != nil {
		return rep, err
	}
	defer up.Close()
	bin, err := filepath.Abs(o.nodecache)
	if err != nil {
		return rep, err
	}
	nc, err := startNodecache(ctx, bin, dir, up.Host(), up.URL())
	if err != nil {
		return rep, err
	}
	// Runs before the upstream is closed and the directory removed.
	defer func() {
		if serr := nc.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	hostsDir, err := writeHostsDir(dir, up.Host(), nc.URL)
	if err != nil {
		return rep, err
	}

	ref := up.Host() + "/" + img.Repo + ":" + img.Tag
	rate := "unthrottled"
	if o.rate > 0 {
		rate = "throttled to " + formatBytes(o.rate) + "/s"
	}
	fmt.Fprintf(o.out, "upstream:  in-process registry at %s, %s\n", up.Host(), rate)
	fmt.Fprintf(o.out, "image:     %s: an OCI index over linux/amd64 and linux/arm64, %d objects, %s\n",
		ref, len(img.Blobs), formatBytes(imageBytes(img)))
	fmt.Fprintf(o.out, "nodecache: %s serve --listen %s (pid %d)\n", o.nodecache, nc.Addr, nc.Cmd.Process.Pid)
	fmt.Fprintf(o.out, "client:    containerd's resolver, mirror set in %s\n\n",
		filepath.Join("certs.d", up.Host(), "hosts.toml"))

	p := puller{hostsDir: hostsDir, mirrorHost: nc.Addr, ref: ref, up: up, img: img}
	if rep.cold, err = p.pull(ctx); err != nil {
		return report{}, fmt.Errorf("pull 1 (cold): %w", err)
	}
	printPull(o.out, "pull 1 (cold", rep.cold)
	if want := blobBytes(img); rep.cold.upstreamBlobBytes != want {
		return report{}, fmt.Errorf("pull 1 (cold): upstream sent %s of blobs, want each blob once, %s",
			formatBytes(rep.cold.upstreamBlobBytes), formatBytes(want))
	}

	if rep.warm, err = p.pull(ctx); err != nil {
		return report{}, fmt.Errorf("pull 2 (warm): %w", err)
	}
	printPull(o.out, "pull 2 (warm", rep.warm)
	if rep.warm.upstreamBlobBytes != 0 {
		return report{}, fmt.Errorf("pull 2 (warm): upstream sent %s of blobs, want none: nodecache did not serve them from its store",
			formatBytes(rep.warm.upstreamBlobBytes))
	}

	up.Close()
	fmt.Fprintln(o.out, "\nupstream stopped; every request to it now fails to connect")
	if rep.offline, err = p.pull(ctx); err != nil {
		return report{}, fmt.Errorf("pull 3 (upstream down): %w%s", err, nc.Tail())
	}
	printPull(o.out, "pull 3 (upstream down", rep.offline)

	fmt.Fprintf(o.out, "\nok: the warm pull took %.0f%% of the cold one's time and no upstream blob bytes.\n"+
		"With the upstream down, nodecache tried it for the tag, then answered with the\n"+
		"last digest it had seen, and served every blob from its store.\n",
		100*rep.warm.took.Seconds()/rep.cold.took.Seconds())
	return rep, nil
}

// puller pulls the demo image through nodecache, measuring each pull.
type puller struct {
	hostsDir, mirrorHost, ref string
	up                        *registrytest.Registry
	img                       registrytest.Image
}

// pull pulls the whole image once with a new resolver and checks that it
// is the image pushed and that nodecache served all of it.
func (p puller) pull(ctx context.Context) (pullStats, error) {
	p.up.ResetCounts()
	counter := &hostBytes{mirrorHost: p.mirrorHost}
	start := time.Now()
	res, err := pullAll(ctx, newResolver(ctx, p.hostsDir, counter), p.ref)
	s := pullStats{
		pullResult:        res,
		took:              time.Since(start),
		upstreamSent:      p.up.BytesSent(),
		upstreamBlobBytes: blobBytesSent(p.up, p.img),
	}
	if err != nil {
		return s, err
	}
	if n := counter.other.Load(); n > 0 {
		return s, fmt.Errorf("containerd read %s from the upstream directly: nodecache failed and containerd fell back to the hosts.toml server", formatBytes(n))
	}
	if res.root != p.img.Index {
		return s, fmt.Errorf("%s resolved to %s, want the pushed index %s", p.ref, res.root, p.img.Index)
	}
	if want := imageBytes(p.img); res.bytes != want || res.objects != len(p.img.Blobs) {
		return s, fmt.Errorf("fetched %d objects, %s; want %d, %s", res.objects, formatBytes(res.bytes), len(p.img.Blobs), formatBytes(want))
	}
	return s, nil
}

// printPull prints one pull as a line; label is "pull N (when" and the
// line says whether the blobs came from the cache.
func printPull(w io.Writer, label string, s pullStats) {
	if s.upstreamBlobBytes == 0 {
		label += ", cache hit):"
	} else {
		label += ", cache miss):"
	}
	fmt.Fprintf(w, "%-35s %s in %.2f s (resolve %d ms); upstream sent %s\n",
		label, formatBytes(s.bytes), s.took.Seconds(), s.resolve.Milliseconds(), formatBytes(s.upstreamSent))
}

// imageBytes is the size of everything in img: index, manifests, configs
// and layers.
func imageBytes(img registrytest.Image) int64 {
	var n int64
	for _, b := range img.Blobs {
		n += int64(len(b))
	}
	return n
}

// blobBytes is the size of img's configs and layers: what a client
// fetches by the blobs route.
func blobBytes(img registrytest.Image) int64 {
	n := imageBytes(img) - int64(len(img.Blobs[img.Index]))
	for _, d := range img.Manifests {
		n -= int64(len(img.Blobs[d]))
	}
	return n
}

// formatBytes prints n in binary units with one decimal: 24.0 MiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}
