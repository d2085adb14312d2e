package cluster

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/peer"
	"nodecache/pkg/upstream"
)

const (
	// defaultLayerMiB is the large layer of the measurements.
	defaultLayerMiB = 256
	// defaultUpstreamMiBps is each node's share of the registry: slow
	// enough that a K=1 pull (32 s for 256 MiB) is far above what this
	// machine needs to hash, copy and store a layer, so the figures show
	// the emulated links, not the CPU.
	defaultUpstreamMiBps = 8
	// defaultNICMiBps keeps the 10:2 ratio of a 10 Gbit/s card to a
	// 2 Gbit/s share of the registry.
	defaultNICMiBps = 5 * defaultUpstreamMiBps
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envSizes() []int {
	var ks []int
	for _, f := range strings.Split(os.Getenv("NODECACHE_BENCH_NODES"), ",") {
		if k, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && k > 0 {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		ks = []int{1, 4, 8, 16, 32}
	}
	return ks
}

// BenchmarkCluster rolls one image out to K nodes for each K and prints
// the figures of docs/peers.md.
func BenchmarkCluster(b *testing.B) {
	layer := int64(envInt("NODECACHE_BENCH_LAYER_MIB", defaultLayerMiB)) << 20
	up := int64(envInt("NODECACHE_BENCH_UPSTREAM_MIBPS", defaultUpstreamMiBps)) << 20
	nic := int64(envInt("NODECACHE_BENCH_NIC_MIBPS", defaultNICMiBps)) << 20
	reg := registrytest.Start(b)
	img := reg.PushSingleImage(b, "bench/app", "v1", layer, 4<<20, 512<<10)
	var blobs []digest.Digest
	var image int64
	for _, d := range append(img.Layers["linux/amd64"], img.Configs["linux/amd64"]) {
		blobs = append(blobs, d)
		image += int64(len(img.Blobs[d]))
	}
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("image %d MiB (layers %d MiB + 4 MiB + 512 KiB), upstream %d MiB/s and NIC %d MiB/s per node, fan-out %d, load average %s",
		image>>20, layer>>20, up>>20, nic>>20, peer.DefaultFanout, strings.TrimSpace(string(load)))
	b.ResetTimer()
	for range b.N {
		var t1 time.Duration
		b.Logf("%4s %12s %16s %10s %8s", "K", "upstream/img", "busiest egr/img", "time", "time/K1")
		for _, k := range envSizes() {
			r := rollout(b, reg, img.Repo, blobs, k, up, nic)
			if t1 == 0 {
				t1 = r.took
			}
			b.Logf("%4d %12.2f %16.2f %10s %8.2f", k, float64(r.upstream)/float64(image),
				float64(r.busiest)/float64(image), r.took.Round(10*time.Millisecond), float64(r.took)/float64(t1))
		}
	}
	b.StopTimer()
	logModel(b, float64(up), float64(nic))
}

// result is one rollout's figures.
type result struct {
	upstream int64 // bytes upstream sent
	busiest  int64 // the busiest node's peer egress
	took     time.Duration
}

// rollout starts k nodes, has each pull every blob at once, checks the
// bytes, and stops them.
func rollout(b *testing.B, reg *registrytest.Registry, repo string, blobs []digest.Digest, k int, up, nic int64) result {
	dir, err := os.MkdirTemp("", "nodecache-bench-cluster-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c := startCluster(b, reg, dir, k, up, nic)
	defer c.stop()
	reg.ResetCounts()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, k*len(blobs))
	for _, n := range c.nodes {
		for _, d := range blobs {
			wg.Go(func() {
				if err := pull(n.srv.URL, reg.Host(), repo, d); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	r := result{upstream: reg.BytesSent(), took: took}
	for _, n := range c.nodes {
		r.busiest = max(r.busiest, n.sent.Load())
	}
	return r
}

// pull GETs blob d through a node and checks its digest.
func pull(node, registry, repo string, d digest.Digest) error {
	resp, err := http.Get(node + "/v2/" + repo + "/blobs/" + d.String() + "?ns=" + url.QueryEscape(registry))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	v := d.Verifier()
	if _, err := io.Copy(v, resp.Body); err != nil || resp.StatusCode != http.StatusOK || !v.Verified() {
		return fmt.Errorf("%s: GET %s: status %d, error %v, verified %v", node, d, resp.StatusCode, err, v.Verified())
	}
	return nil
}

// node is one nodecache node of the cluster.
type node struct {
	m       *mirror.Server
	store   *diskstore.Store
	srv     *httptest.Server // clients
	peerSrv *httptest.Server
	proxy   *httptest.Server // its paced link to the registry
	sent    atomic.Int64     // peer egress
}

type cluster struct{ nodes []*node }

func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.srv.Close()
		n.peerSrv.Close()
		n.proxy.Close()
		n.m.Close()
		n.store.Close()
	}
}

// listenOn listens on a free port of 127.0.0.x.
func listenOn(b *testing.B, x int) net.Listener {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", x))
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func serve(l net.Listener, h http.Handler) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Start()
	return s
}

// startCluster starts k nodes on 127.0.0.2 onwards that know each other
// (no peers at all for k = 1).
func startCluster(b *testing.B, reg *registrytest.Registry, dir string, k int, up, nic int64) *cluster {
	secretPath := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretPath, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		b.Fatal(err)
	}
	ls := make([]net.Listener, k)
	var addrs []string
	for i := range ls {
		ls[i] = listenOn(b, 2+i)
		addrs = append(addrs, ls[i].Addr().String())
	}
	c := &cluster{}
	for i := range k {
		c.nodes = append(c.nodes, startNode(b, reg, filepath.Join(dir, strconv.Itoa(i)), secretPath, ls[i], addrs, i, up, nic))
	}
	return c
}

func startNode(b *testing.B, reg *registrytest.Registry, dir, secretPath string, l net.Listener, addrs []string, i int, up, nic int64) *node {
	n := &node{}
	target, _ := url.Parse(reg.URL())
	link := newBucket(up)
	n.proxy = serve(listenOn(b, 2+i), &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = target.Host },
		ModifyResponse: func(r *http.Response) error { r.Body = pacedBody{ReadCloser: r.Body, b: link}; return nil },
		ErrorLog:       log.New(io.Discard, "", 0),
	})
	var err error
	if n.store, err = diskstore.Open(dir); err != nil {
		b.Fatal(err)
	}
	upClient, err := upstream.New(map[string]string{reg.Host(): n.proxy.URL})
	if err != nil {
		b.Fatal(err)
	}
	opts := []mirror.Option{mirror.WithAllowList([]string{reg.Host()}), mirror.WithDefaultRegistry(reg.Host()),
		mirror.WithLogger(slog.New(slog.DiscardHandler))}
	var h http.Handler = http.NotFoundHandler()
	var secret *peer.Secret
	if len(addrs) > 1 {
		health := peer.NewHealth()
		members, err := peer.NewMembership(l.Addr().String(), peer.Sources{Static: addrs}, health)
		if err != nil {
			b.Fatal(err)
		}
		if secret, err = peer.LoadSecret(secretPath); err != nil {
			b.Fatal(err)
		}
		opts = append(opts, mirror.WithPeers(mirror.Peers{Members: members, Client: peer.NewClient(secret, health)}))
	}
	n.m = mirror.New(n.store, upClient, opts...)
	if secret != nil {
		h = peer.NewHandler(secret, n.m.Allowed, n.m)
	}
	nicLink := newBucket(nic)
	n.peerSrv = serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&nicWriter{ResponseWriter: w, b: nicLink, sent: &n.sent}, r)
	}))
	n.srv = serve(listenOn(b, 2+i), n.m)
	return n
}
