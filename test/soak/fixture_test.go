//go:build soak

package soak

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

// upstreamRate paces every blob and manifest body the registry sends, so
// mid-body hang-ups meet bodies in flight and an endless body fills at
// most upstreamRate × fillTimeout bytes before the daemon gives up on it.
const upstreamRate = 16 << 20

// faultBlobSize is the size of the one blob behind each fault: several
// writes long, so body faults strike mid-body.
const faultBlobSize = 512 << 10

// content is what the load can fetch and check: repository, digest and
// the bytes behind it.
type content struct {
	repo string
	d    digest.Digest
	data []byte
}

// fixture is the upstream and what it holds.
type fixture struct {
	up   *registrytest.Registry
	gate *registrytest.Gate // holds stalls and silent upstreams until the load ends

	images []registrytest.Image
	blobs  []content // healthy layers and configs
	large  []content // healthy blobs large enough to hang up in
	pool   []content // small blobs fetched once each: cold misses
	faults []fault
}

// fault is one faulted repository and its blob.
type fault struct {
	name string
	blob content
}

// faultNames are the faults the upstream injects, one repository each.
var faultNames = []string{"stall", "reset", "cut", "longer", "shorter", "corrupt", "endless", "noheaders", "redirect", "500", "503", "429"}

// newFixture starts the registry and pushes two multi-arch images, a pool
// of poolSize small blobs and one blob per fault.
func newFixture(t *testing.T, poolSize int) *fixture {
	t.Helper()
	f := &fixture{up: registrytest.Start(t, registrytest.WithThrottle(upstreamRate)), gate: registrytest.NewGate()}
	for _, repo := range []string{"ok/a", "ok/b"} {
		img := f.up.PushImage(t, repo, "v1", 2<<10, 200<<10, 3<<20)
		f.images = append(f.images, img)
		for _, ds := range [][]digest.Digest{img.Layers["linux/amd64"], img.Layers["linux/arm64"], {img.Configs["linux/amd64"], img.Configs["linux/arm64"]}} {
			for _, d := range ds {
				c := content{repo, d, img.Blobs[d]}
				f.blobs = append(f.blobs, c)
				if len(c.data) >= 1<<20 {
					f.large = append(f.large, c)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range poolSize {
		data := registrytest.Random(uint64(1000+i), int64(4<<10+rng.IntN(44<<10)))
		f.pool = append(f.pool, content{"pool", f.up.PushBlob(t, "pool", data), data})
	}
	var hooks []registrytest.Fault
	for i, name := range faultNames {
		repo := "fault/" + name
		data := registrytest.Random(uint64(500+i), faultBlobSize)
		c := content{repo, f.up.PushBlob(t, repo, data), data}
		f.faults = append(f.faults, fault{name, c})
		hooks = append(hooks, f.hook(t, name, c))
	}
	f.up.SetFault(registrytest.Faults(hooks...))
	return f
}

// hook is the upstream fault for one faulted repository.
func (f *fixture) hook(t *testing.T, name string, c content) registrytest.Fault {
	prefix := "/v2/" + c.repo + "/"
	inRepo := func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, prefix) }
	get := func(r *http.Request) bool { return r.Method == http.MethodGet && inRepo(r) }
	up := f.up
	switch name {
	case "stall":
		return up.Stall(faultBlobSize/4, f.gate, get)
	case "reset":
		return up.ResetAfter(faultBlobSize/3, get)
	case "cut":
		return up.CutAfter(faultBlobSize/2, get)
	case "longer":
		return up.WrongLength(+1000, get)
	case "shorter":
		return up.WrongLength(-1000, get)
	case "corrupt":
		return up.WrongBytes(faultBlobSize-10, get)
	case "endless":
		return registrytest.Endless(get)
	case "noheaders":
		return up.NoHeaders(f.gate, inRepo)
	case "redirect":
		target := "target/redirect"
		up.PushBlob(t, target, c.data)
		return registrytest.Redirect(up.URL()+"/v2/"+target+"/blobs/"+c.d.String(), inRepo)
	case "500":
		return registrytest.FailWith(http.StatusInternalServerError, inRepo)
	case "503":
		return registrytest.FailWith(http.StatusServiceUnavailable, inRepo)
	case "429":
		return registrytest.TooManyRequests("1", inRepo)
	}
	panic(fmt.Sprintf("no fault %q", name))
}
