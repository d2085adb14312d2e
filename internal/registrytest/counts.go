package registrytest

import (
	"strings"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// Route kinds, as passed to Count: ociref's pull-path kinds, and two more
// for what a mirror never sends.
const (
	KindBase      = string(ociref.KindBase)      // /v2/
	KindManifests = string(ociref.KindManifests) // /v2/<name>/manifests/<ref>
	KindBlobs     = string(ociref.KindBlobs)     // /v2/<name>/blobs/<digest>
	KindUploads   = "uploads"                    // /v2/<name>/blobs/uploads/[<uuid>]
	KindTags      = string(ociref.KindTags)      // /v2/<name>/tags/list
	KindReferrers = string(ociref.KindReferrers) // /v2/<name>/referrers/<digest>
	KindOther     = "other"                      // anything else, such as /v2/_catalog
)

// classify returns the route kind of an URL path and its last segment
// (the reference or digest for manifests, blobs and referrers).
func classify(path string) (kind, last string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return KindBase, ""
		}
		return KindOther, ""
	}
	if rest == "" {
		return KindBase, ""
	}
	segs := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	n := len(segs)
	last = segs[n-1]
	switch {
	case n >= 3 && segs[n-2] == "blobs" && last == "uploads",
		n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		return KindUploads, ""
	case n >= 3 && segs[n-2] == "tags" && last == "list":
		return KindTags, ""
	case n >= 3 && segs[n-2] == "blobs":
		return KindBlobs, last
	case n >= 3 && segs[n-2] == "manifests":
		return KindManifests, last
	case n >= 3 && segs[n-2] == "referrers":
		return KindReferrers, last
	}
	return KindOther, ""
}

// Count returns how many requests with this method (such as "GET") and
// route kind (such as KindBlobs) the registry received, faulted ones
// included. Pushes made with the Push helpers are not counted.
func (r *Registry) Count(method, kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[routeKey{method, kind}]
}

// BlobGets returns how many GET /v2/<any>/blobs/<d> requests were received.
func (r *Registry) BlobGets(d digest.Digest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d]
}

// ManifestRequests returns Count(method, KindManifests).
func (r *Registry) ManifestRequests(method string) int {
	return r.Count(method, KindManifests)
}

// BytesSent returns the body bytes written for GET blobs and manifests,
// including bytes a fault hook wrote.
func (r *Registry) BytesSent() int64 {
	return r.sent.Load()
}

// ResetCounts sets every count and BytesSent back to zero.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	clear(r.requests)
	clear(r.blobGets)
	r.sent.Store(0)
	r.mu.Unlock()
}
