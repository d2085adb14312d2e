//go:build benchcompare

package compare

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

const (
	// UpstreamRate paces each upstream body, like a registry reached over
	// a 1 Gbit/s link.
	UpstreamRate = 100 << 20
	// bigBlob is the cold and warm blob of the blob workloads.
	bigBlob = 256 << 20
	// coldClients share one cold blob in the first workload.
	coldClients = 20
	// imageLayers of layerSize make the whole-image workload's image.
	imageLayers = 10
	layerSize   = 30 << 20
	// warmClients each read the cached big blob warmRounds times.
	warmClients = 8
	warmRounds  = 2
	// wrkDuration is each wrk run; the tag stays within nodecache's
	// --tag-ttl (30 s) and nginx's manifest cache time for it.
	wrkDuration = 5 * time.Second
	// startupEntries is the store size of the start-up workload.
	startupEntries = 200_000
	// workDir is on the real disk, not tmpfs, as a node's cache is
	// (newSetup checks).
	workDir = "/var/tmp/nodecache-bench-compare"
	// tmpfsMagic is tmpfs's f_type in statfs(2).
	tmpfsMagic = 0x01021994
)

// The contenders' addresses: each on its own loopback address.
const (
	nodecacheIP    = "127.0.0.21"
	nginxIP        = "127.0.0.22"
	staticIP       = "127.0.0.23"
	distributionIP = "127.0.0.24"
	bareIP         = "127.0.0.25"
	baselineIP     = "127.0.0.26"
)

// reps is how often each workload runs each contender: 3, or
// $COMPARE_REPS for a quick look. $COMPARE_ONLY, if set, runs only the
// workloads whose heading contains it ("manifest", "cold", "start-up").
// $COMPARE_BASELINE, if set, names another nodecache binary (an earlier
// build) to run beside bin/nodecache in every workload.
var reps = repsFromEnv()

func repsFromEnv() int {
	if n, err := strconv.Atoi(os.Getenv("COMPARE_REPS")); err == nil && n > 0 {
		return n
	}
	return 3
}

var acceptManifest = http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}

// TestCompare runs every workload and prints its tables.
func TestCompare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("bench-compare runs as root: nginx, docker-registry and the data directories under " + workDir)
	}
	for _, cmd := range []string{"nginx", "docker-registry", "wrk"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("%s is missing: run `make bench-compare`, which installs it with hack/need.sh", cmd)
		}
	}
	bin, err := filepath.Abs("../../bin/nodecache")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v: run `make build` first (make bench-compare does)", err)
	}
	began := time.Now()
	s := newSetup(t, bin)
	defer s.stopAll()
	big := registrytest.Random(1, bigBlob)
	bigDigest := s.up.PushBlob(t, "bench/big", big)
	img := s.up.PushSingleImage(t, "bench/image", "v1", repeat(layerSize, imageLayers)...)
	manifest := img.Manifests["linux/amd64"]
	staticDir := filepath.Join(s.work, "static")
	must(t, os.MkdirAll(staticDir, 0o755))
	must(t, os.WriteFile(filepath.Join(staticDir, "blob"), big, 0o644))
	must(t, os.WriteFile(filepath.Join(staticDir, "manifest"), img.Blobs[manifest], 0o644))
	s.start(t, staticDir)
	bare, stopBare, err := newBare(freeAddr(t, bareIP), acceptManifest.Get("Accept"), img.Blobs[manifest])
	must(t, err)
	defer stopBare()
	s.bare = bare

	out := new(strings.Builder)
	fmt.Fprintf(out, "bench-compare, %s; %d CPUs, %s; upstream paced to %d MiB/s per request; load average at start %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), machine(), UpstreamRate>>20, loadAvg())
	var all []*measure
	run := func(name string, f func() []*measure) {
		if only := os.Getenv("COMPARE_ONLY"); only != "" && !strings.Contains(name, only) {
			return
		}
		before := loadAvg()
		ms := f()
		fmt.Fprintf(out, "\n### %s\n\nload average before %s, after %s\n", name, before, loadAvg())
		for _, m := range ms {
			m.print(out)
		}
		all = append(all, ms...)
		t.Logf("%s done after %v", name, time.Since(began).Round(time.Second))
	}
	bigPath := blobPath("bench/big", bigDigest)
	run("20 clients, one cold 256 MiB blob", func() []*measure { return s.coldShared(t, bigPath) })
	run("one client, cold 256 MiB blob", func() []*measure { return s.coldOne(t, bigPath) })
	run("whole image, 10 × 30 MiB layers, cold", func() []*measure { return s.coldImage(t) })
	run("warm blob, 8 clients", func() []*measure { return s.warmBlob(t, bigPath) })
	run("cached manifest, wrk c=32", func() []*measure { return s.cachedManifest(t, manifest) })
	s.stopAll()
	run("start-up with 200,000 entries", func() []*measure { return s.startup(t) })

	fmt.Fprintf(out, "\n### Summary\n\n| workload | nodecache | best peer | limit | ÷ limit | ÷ best peer |\n|---|---|---|---|---|---|\n")
	for _, m := range all {
		m.summary(out)
	}
	fmt.Fprintf(out, "\nload average at end %s; took %v\n", loadAvg(), time.Since(began).Round(time.Second))
	fmt.Print(out.String())
	must(t, os.WriteFile(filepath.Join(s.work, "results.md"), []byte(out.String()), 0o644))
}

func newSetup(t *testing.T, bin string) *setup {
	must(t, os.MkdirAll(workDir, 0o755))
	var fs syscall.Statfs_t
	must(t, syscall.Statfs(workDir, &fs))
	if fs.Type == tmpfsMagic {
		t.Fatalf("%s is on tmpfs: the caches' data must be on the real disk, as a node's cache is", workDir)
	}
	// Each run's logs start empty; the start-up store is kept for the next.
	for _, pattern := range []string{"*.log", "*/*.log"} {
		logs, _ := filepath.Glob(filepath.Join(workDir, pattern))
		for _, l := range logs {
			must(t, os.Remove(l))
		}
	}
	return &setup{work: workDir, bin: bin, procs: map[string]*proc{},
		up: registrytest.Start(t, registrytest.WithThrottle(UpstreamRate))}
}

// start starts the caches and names the contenders.
func (s *setup) start(t *testing.T, staticDir string) {
	var err error
	if s.nodecache, err = s.newNodecache("nodecache", roleSelf, s.bin, freeAddr(t, nodecacheIP), freeAddr(t, nodecacheIP)); err != nil {
		t.Fatal(err)
	}
	if bin := os.Getenv("COMPARE_BASELINE"); bin != "" {
		if s.baseline, err = s.newNodecache("nodecache baseline", roleBaseline, bin, freeAddr(t, baselineIP), freeAddr(t, baselineIP)); err != nil {
			t.Fatal(err)
		}
	}
	if s.nginx, s.static, err = s.newNginx(freeAddr(t, nginxIP), freeAddr(t, staticIP), staticDir); err != nil {
		t.Fatal(err)
	}
	if s.distribution, err = s.newDistribution(freeAddr(t, distributionIP)); err != nil {
		t.Fatal(err)
	}
	s.direct = &contender{name: "direct", role: roleLimit, base: s.up.URL()}
}

// caches are the contenders that cache: nodecache, its baseline if
// $COMPARE_BASELINE names one, and the peers.
func (s *setup) caches() []*contender {
	if s.baseline != nil {
		return []*contender{s.nodecache, s.baseline, s.nginx, s.distribution}
	}
	return []*contender{s.nodecache, s.nginx, s.distribution}
}

// coldShared: 20 clients GET one blob no cache has, at once.
func (s *setup) coldShared(t *testing.T, path string) []*measure {
	upBytes := newMeasure("20 clients, one cold 256 MiB blob: upstream bytes", "× the blob", false)
	upBytes.limit, upBytes.limitName = 1, "1× (one download)"
	ttfb := newMeasure("20 clients, one cold 256 MiB blob: time to first byte, median", "s", false)
	ttlb := newMeasure("20 clients, one cold 256 MiB blob: time to last byte, median", "s", false)
	for r := range reps {
		for _, c := range rotate(append(s.caches(), s.direct), r) {
			s.cold(t, c)
			sent := s.up.BytesSent()
			res, err := getConcurrently(c.url(path), nil, coldClients, 1, bigBlob)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			upBytes.add(c, float64(s.up.BytesSent()-sent)/bigBlob)
			ttfb.add(c, medianDuration(res.ttfb))
			ttlb.add(c, medianDuration(res.ttlb))
		}
	}
	// The limit of the time to last byte is one direct client's.
	ttlb.limit, ttlb.limitName = s.oneDirect(t, path), "one direct client"
	return []*measure{upBytes, ttfb, ttlb}
}

// oneDirect is the median time to last byte of one direct client.
func (s *setup) oneDirect(t *testing.T, path string) float64 {
	var ts []float64
	for range reps {
		res, err := getConcurrently(s.direct.url(path), nil, 1, 1, bigBlob)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, res.ttlb[0].Seconds())
	}
	return median(ts)
}

// coldOne: one client GETs a blob no cache has.
func (s *setup) coldOne(t *testing.T, path string) []*measure {
	m := newMeasure("one client, cold 256 MiB blob: time to last byte", "s", false)
	for r := range reps {
		for _, c := range rotate(append(s.caches(), s.direct), r) {
			s.cold(t, c)
			res, err := getConcurrently(c.url(path), nil, 1, 1, bigBlob)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			m.add(c, res.ttlb[0].Seconds())
		}
	}
	return []*measure{m}
}

// coldImage: a go-containerregistry pull of an image no cache has.
func (s *setup) coldImage(t *testing.T) []*measure {
	m := newMeasure("whole image, 10 × 30 MiB layers, cold: go-containerregistry pull", "s", false)
	for r := range reps {
		for _, c := range rotate(append(s.caches(), s.direct), r) {
			s.cold(t, c)
			ref := strings.TrimPrefix(c.base, "http://") + "/bench/image:v1"
			took, err := pullImage(ref, pullDir(s.work, strings.Fields(c.name)[0]))
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			m.add(c, took.Seconds())
		}
	}
	return []*measure{m}
}

// warmBlob: 8 clients read a blob every cache holds.
func (s *setup) warmBlob(t *testing.T, path string) []*measure {
	m := newMeasure("warm blob, 8 clients: throughput", "MB/s", true)
	for _, c := range s.caches() { // warm once, untimed
		if _, err := getConcurrently(c.url(path), nil, 1, 1, bigBlob); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
	for r := range reps {
		for _, c := range rotate(append(s.caches(), s.static), r) {
			res, err := getConcurrently(c.url(path), nil, warmClients, warmRounds, bigBlob)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			m.add(c, float64(res.bytes)/res.elapsed.Seconds()/1e6)
		}
	}
	return []*measure{m}
}

// cachedManifest: wrk GETs a cached manifest by digest, and by tag.
func (s *setup) cachedManifest(t *testing.T, d digest.Digest) []*measure {
	byDigest := newMeasure("cached manifest by digest, wrk c=32", "req/s", true)
	byTag := newMeasure("cached manifest by tag, within the tag TTL, wrk c=32", "req/s", true)
	for r := range reps {
		for _, c := range rotate(append(s.caches(), s.static, s.bare), r) {
			for _, w := range []struct {
				m    *measure
				path string
			}{{byDigest, "/v2/bench/image/manifests/" + d.String()}, {byTag, "/v2/bench/image/manifests/v1"}} {
				if _, _, _, err := timedGet(newClient(), c.url(w.path), acceptManifest); err != nil { // warm
					t.Fatalf("%s: %v", c, err)
				}
				rate, err := wrkRate(c.url(w.path), acceptManifest, wrkDuration)
				if err != nil {
					t.Fatalf("%s: %v", c, err)
				}
				w.m.add(c, rate)
			}
		}
	}
	return []*measure{byDigest, byTag}
}

// cold empties c's cache, if it has one.
func (s *setup) cold(t *testing.T, c *contender) {
	if c.cold != nil {
		if err := c.cold(); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
}

func repeat(n int64, times int) []int64 {
	out := make([]int64, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// machine names the CPU model and memory, for the table's heading.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %d GiB RAM", (kb+(1<<19))>>20)
		}
	}
	return model + mem
}
