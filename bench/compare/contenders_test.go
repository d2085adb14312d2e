//go:build benchcompare

package compare

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

// Roles of contenders in a table: the ratios are taken to the limit and
// to the best peer.
const (
	roleSelf  = "nodecache"
	rolePeer  = "peer"
	roleLimit = "limit"
	// roleCeiling is a measure of what the platform allows, shown beside
	// the others: Go's net/http serving the bytes with nothing else.
	roleCeiling = "ceiling"
	// roleBaseline is another build of nodecache ($COMPARE_BASELINE),
	// shown beside the others to see what a change moved.
	roleBaseline = "baseline"
)

// contender is one way to get the workloads' bytes.
type contender struct {
	name string
	role string
	base string // http://host:port
	// path maps a registry path (/v2/...) to this contender's; static
	// files have their own.
	path func(string) string
	// cold restarts the contender with an empty cache; nil if it has none.
	cold func() error
}

func (c *contender) url(p string) string {
	if c.path != nil {
		return c.base + c.path(p)
	}
	return c.base + p
}

// setup is everything the workloads run against.
type setup struct {
	work string // on the real disk: data directories, logs, pulls
	up   *registrytest.Registry
	bin  string // bin/nodecache

	nodecache, nginx, distribution, direct, static *contender
	baseline                                       *contender       // $COMPARE_BASELINE, or nil
	bare                                           *contender       // Go net/http, for the manifest workloads
	procs                                          map[string]*proc // running, by contender name
}

// stopAll stops every contender still running.
func (s *setup) stopAll() {
	for name, p := range s.procs {
		p.stop()
		delete(s.procs, name)
	}
}

// restart stops name's process, empties dataDir and starts it again
// with start, which returns the process once it answers.
func (s *setup) restart(name, dataDir string, start func() (*proc, error)) error {
	s.procs[name].stop()
	delete(s.procs, name)
	if err := fresh(dataDir); err != nil {
		return err
	}
	p, err := start()
	if err != nil {
		return err
	}
	s.procs[name] = p
	return nil
}

// nodecacheArgs are the daemon's flags in every workload: its defaults,
// with the upstream as its default registry.
func (s *setup) nodecacheArgs(addr, metrics, dataDir string) []string {
	return []string{s.bin, "serve", "--listen", addr, "--metrics-listen", metrics,
		"--data-dir", dataDir, "--registry", s.up.Host() + "=" + s.up.URL(),
		"--default-registry", s.up.Host(), "--shutdown-grace", "5s"}
}

// newNodecache starts the daemon bin (bin/nodecache, or the baseline's)
// on addr, under name, in its own data directory.
func (s *setup) newNodecache(name, role, bin, addr, metrics string) (*contender, error) {
	dataDir := filepath.Join(s.work, strings.ReplaceAll(name, " ", "-"))
	start := func() (*proc, error) {
		args := s.nodecacheArgs(addr, metrics, dataDir)
		args[0] = bin
		p, err := startProc(name, dataDir+".log", args...)
		if err != nil {
			return nil, err
		}
		if err := p.waitHTTP("http://" + metrics + "/readyz"); err != nil {
			p.stop()
			return nil, err
		}
		return p, nil
	}
	c := &contender{name: name, role: role, base: "http://" + addr,
		cold: func() error { return s.restart(name, dataDir, start) }}
	return c, c.cold()
}

// newNginx starts nginx with nginx.conf: proxy_cache in front of the
// upstream on proxyAddr, and static files on staticAddr.
func (s *setup) newNginx(proxyAddr, staticAddr, staticDir string) (cache, static *contender, err error) {
	dir := filepath.Join(s.work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	conf, err := render("nginx.conf", dir, map[string]string{
		"dir": dir, "proxy": proxyAddr, "static": staticAddr, "staticdir": staticDir, "upstream": s.up.URL(),
	})
	if err != nil {
		return nil, nil, err
	}
	cacheDir := filepath.Join(dir, "cache")
	start := func() (*proc, error) {
		p, err := startProc("nginx", filepath.Join(dir, "nginx.log"), "nginx", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
		if err != nil {
			return nil, err
		}
		if err := p.waitHTTP("http://" + staticAddr + "/manifest"); err != nil {
			p.stop()
			return nil, err
		}
		return p, nil
	}
	cache = &contender{name: "nginx proxy_cache", role: rolePeer, base: "http://" + proxyAddr,
		cold: func() error { return s.restart("nginx", cacheDir, start) }}
	static = &contender{name: "nginx static file", role: roleLimit, base: "http://" + staticAddr, path: staticPath}
	return cache, static, cache.cold()
}

// staticPath maps a registry path to nginx's static copy of its bytes:
// every blob workload uses the one large blob, every manifest workload
// the one image manifest.
func staticPath(p string) string {
	if filepath.Base(filepath.Dir(p)) == "blobs" {
		return "/blob"
	}
	return "/manifest"
}

// newDistribution starts docker/distribution in proxy mode with
// distribution.yml.
func (s *setup) newDistribution(addr string) (*contender, error) {
	dir := filepath.Join(s.work, "distribution")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf, err := render("distribution.yml", dir, map[string]string{
		"dir": dir, "addr": addr, "upstream": s.up.URL(),
	})
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	start := func() (*proc, error) {
		p, err := startProc("distribution", filepath.Join(dir, "distribution.log"), "docker-registry", "serve", conf)
		if err != nil {
			return nil, err
		}
		if err := p.waitHTTP("http://" + addr + "/v2/"); err != nil {
			p.stop()
			return nil, err
		}
		return p, nil
	}
	c := &contender{name: "distribution proxy", role: rolePeer, base: "http://" + addr,
		cold: func() error { return s.restart("distribution", dataDir, start) }}
	return c, c.cold()
}

func (c *contender) String() string { return fmt.Sprintf("%s (%s)", c.name, c.base) }

// newBare serves manifest on addr from a bare net/http handler: the
// headers nodecache sends for it (type, digest, ETag, Accept-Ranges,
// length), built once, and the bytes, with the daemon's server limits.
// It is what any Go server can reach on this machine, the ceiling of
// nodecache's cached-manifest answers; it runs in this process, which
// is idle while wrk measures it.
func newBare(addr, mediaType string, manifest []byte) (*contender, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	d := digest.FromBytes(manifest).String()
	header := http.Header{"Content-Type": {mediaType}, "Docker-Content-Digest": {d}, "Etag": {`"` + d + `"`},
		"Accept-Ranges": {"bytes"}, "Content-Length": {strconv.Itoa(len(manifest))}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			for k, v := range header {
				h[k] = v
			}
			w.Write(manifest)
		}),
		ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10, IdleTimeout: 2 * time.Minute, // pkg/daemon's
	}
	go srv.Serve(ln)
	c := &contender{name: "Go net/http bare handler", role: roleCeiling, base: "http://" + addr}
	return c, func() { srv.Close() }, nil
}
