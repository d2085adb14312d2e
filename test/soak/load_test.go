//go:build soak

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// requestTimeout bounds one request of the load. Every bound the daemon
// has under these faults is shorter (fillTimeout, the upstream header
// timeout and its retries), so a request that reaches it has hung.
const requestTimeout = 60 * time.Second

// ociAccept is the Accept containerd sends for manifests.
const ociAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"

// load sends requests to the daemon at base.
type load struct {
	f        *fixture
	base     string // http://host:port of the daemon
	client   *http.Client
	tl       *tally
	nextPool atomic.Int64 // next pool blob to fetch: each is a cold miss once
	endless  atomic.Bool  // an endless-body request is in flight: one at a time
}

// kinds and their weights in the mix.
var kinds = []struct {
	name   string
	weight int
}{
	{"blob", 18}, {"manifest-tag", 8}, {"manifest-digest", 8}, {"range", 12}, {"head", 10},
	{"miss", 10}, {"hangup", 8}, {"bad", 12}, {"fault", 14},
}

// run sends requests from one worker until ctx ends.
func (l *load) run(ctx context.Context, rng *rand.Rand) {
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	for ctx.Err() == nil {
		n := rng.IntN(total)
		for _, k := range kinds {
			if n -= k.weight; n < 0 {
				l.send(ctx, l.pick(k.name, rng))
				break
			}
		}
	}
}

// send sends r and judges the answer. The load's own end cancels ctx; a
// request cut by it is not judged.
func (l *load) send(ctx context.Context, r request) {
	if r.kind == "fault:endless" {
		defer l.endless.Store(false)
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	q := r.query
	if q == "" {
		q = "ns=" + l.f.up.Host()
	}
	req, err := http.NewRequestWithContext(rctx, r.method, l.base+r.path+"?"+q, nil)
	if err != nil {
		panic(err)
	}
	if r.rangeH != "" {
		req.Header.Set("Range", r.rangeH)
	}
	if r.accept != "" {
		req.Header.Set("Accept", r.accept)
	}
	l.tl.add(r.kind, func(k *kindTally) { k.requests++ })
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() == nil { // else the load ended during the request
			l.tl.transportError(r, err)
		}
		return
	}
	defer resp.Body.Close()
	l.tl.check(r, resp, cancel)
}

// pick builds a request of the named kind.
func (l *load) pick(kind string, rng *rand.Rand) request {
	f := l.f
	img := f.images[rng.IntN(len(f.images))]
	blob := f.blobs[rng.IntN(len(f.blobs))]
	switch kind {
	case "blob":
		return blobRequest("blob", http.MethodGet, blob)
	case "manifest-tag":
		return request{kind: kind, method: http.MethodGet, path: "/v2/" + img.Repo + "/manifests/" + img.Tag, accept: ociAccept, want: img.Blobs[img.Index]}
	case "manifest-digest":
		d := img.Index
		if rng.IntN(2) == 0 {
			d = img.Manifests["linux/arm64"]
		}
		return request{kind: kind, method: http.MethodGet, path: "/v2/" + img.Repo + "/manifests/" + d.String(), accept: ociAccept, want: img.Blobs[d]}
	case "range":
		r := blobRequest("range", http.MethodGet, blob)
		r.rangeH = randomRange(rng, len(blob.data))
		return r
	case "head":
		if rng.IntN(3) == 0 {
			return request{kind: kind, method: http.MethodHead, path: "/v2/" + img.Repo + "/manifests/" + img.Tag, accept: ociAccept, want: img.Blobs[img.Index]}
		}
		return blobRequest("head", http.MethodHead, blob)
	case "miss":
		if i := l.nextPool.Add(1) - 1; i < int64(len(f.pool)) {
			return blobRequest("miss", http.MethodGet, f.pool[i])
		}
		return blobRequest("blob", http.MethodGet, f.pool[rng.IntN(len(f.pool))])
	case "hangup":
		r := blobRequest("hangup", http.MethodGet, f.large[rng.IntN(len(f.large))])
		if rng.IntN(2) == 0 {
			r = blobRequest("hangup", http.MethodGet, f.pool[rng.IntN(len(f.pool))])
		}
		r.hangAt = 1 + rng.Int64N(int64(len(r.want)/2))
		return r
	case "bad":
		return l.badRequest(rng, blob)
	}
	return l.faultRequest(rng)
}

func blobRequest(kind, method string, c content) request {
	return request{kind: kind, method: method, path: "/v2/" + c.repo + "/blobs/" + c.d.String(), want: c.data}
}

// randomRange is a satisfiable Range header for size bytes, in one of the
// three forms.
func randomRange(rng *rand.Rand, size int) string {
	start := rng.IntN(size)
	switch rng.IntN(3) {
	case 0:
		return fmt.Sprintf("bytes=%d-", start)
	case 1:
		return fmt.Sprintf("bytes=-%d", 1+rng.IntN(size))
	}
	return fmt.Sprintf("bytes=%d-%d", start, start+rng.IntN(size-start))
}

// faultRequest is a GET (whole or a range) or a HEAD of a faulted blob.
// Endless bodies are read for 1 MiB, then hung up; one at a time, since
// each goes on writing to disk until its unread fill stops (30 s later).
func (l *load) faultRequest(rng *rand.Rand) request {
	ft := l.f.faults[rng.IntN(len(l.f.faults))]
	if ft.name == "endless" && !l.endless.CompareAndSwap(false, true) {
		ft = l.f.faults[0]
	}
	r := blobRequest("fault:"+ft.name, http.MethodGet, ft.blob)
	r.faulty = true
	switch n := rng.IntN(4); {
	case ft.name == "endless":
		r.hangAt = 1 << 20
	case n == 0:
		r.method = http.MethodHead
	case n == 1:
		r.rangeH = randomRange(rng, len(ft.blob.data))
	}
	return r
}

// badRequest is one of the malformed requests a hostile or broken client
// sends: bad paths, names, digests, methods, registries and ranges.
func (l *load) badRequest(rng *rand.Rand, c content) request {
	blobPath := "/v2/" + c.repo + "/blobs/" + c.d.String()
	hex := c.d.Encoded()
	bad := []request{
		{path: "/v2/" + c.repo + "/blobs/sha256:zzzz"},
		{path: "/v2/" + c.repo + "/blobs/sha256:" + hex[:63]},
		{path: "/v2/" + c.repo + "/blobs/md5:" + hex[:32]},
		{path: "/v2/" + c.repo + "/blobs/sha256:" + strings.Repeat("0", 64)},
		{path: "/v2/" + c.repo + "/manifests/.INVALID_MANIFEST_NAME", accept: ociAccept},
		{path: "/v2/" + c.repo + "/manifests/nosuchtag", accept: ociAccept},
		{path: "/v2/OK/A/manifests/v1", accept: ociAccept},
		{path: "/v2/ok/nosuch/manifests/v1", accept: ociAccept},
		{path: "/v2/../../etc/passwd"},
		{path: "/v2/" + strings.Repeat("x/", 300) + "manifests/v1"},
		{path: "/v3/" + c.repo + "/blobs/" + c.d.String()},
		{path: blobPath, query: "ns=evil.example.com"},
		{path: blobPath, query: "ns=%zz"},
		{path: blobPath, rangeH: "bytes=9-1", want: c.data},
		{path: blobPath, rangeH: "bytes=abc", want: c.data},
		{path: blobPath, rangeH: fmt.Sprintf("bytes=%d-", len(c.data)+10), want: c.data},
		{path: blobPath, rangeH: "bytes=0-1,5-9", want: c.data},
		{method: http.MethodPost, path: "/v2/" + c.repo + "/blobs/uploads/"},
		{method: http.MethodPut, path: "/v2/" + c.repo + "/manifests/v1"},
		{method: http.MethodDelete, path: blobPath},
		{method: http.MethodPatch, path: blobPath},
		{method: "BREW", path: blobPath},
	}
	r := bad[rng.IntN(len(bad))]
	r.kind, r.bad = "bad", true
	if r.method == "" {
		r.method = http.MethodGet
	}
	return r
}

// newClient is the load's HTTP client: enough idle connections for every
// worker, no redirects followed (the daemon must not send any).
func newClient(workers int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = workers
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
