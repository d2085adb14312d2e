package mirror

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// TestTagByGetWhenHeadHasNoDigest: a registry that sends no
// Docker-Content-Digest on HEAD still has its tags resolved, by one GET
// for all the clients that ask at once. The manifest that GET brought is
// stored once, through the fill path, and the requests by digest that
// follow are served from the store without asking upstream again.
func TestTagByGetWhenHeadHasNoDigest(t *testing.T) {
	var commits atomic.Int32
	countCommits := diskstore.WithStepHook(func(st diskstore.Step) {
		if st == diskstore.StepRenamed {
			commits.Add(1)
		}
	})
	e := newEnvStore(t, []diskstore.Option{countCommits}, []registrytest.Option{registrytest.WithoutHeadDigest()})
	img := e.up.PushImage(t, "test/app", "v1", 100)
	want := img.Blobs[img.Index]

	const clients = 8
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), acceptIndex)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Errorf("by tag: status %d, %d bytes; want 200 and the index", resp.StatusCode, len(body))
			}
			if dg := resp.Header.Get("Docker-Content-Digest"); dg != img.Index.String() {
				t.Errorf("by tag: Docker-Content-Digest %q, want %s", dg, img.Index)
			}
		})
	}
	wg.Wait()
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Fatalf("upstream manifest GETs = %d, want 1", n)
	}
	info, err := e.store.Stat(img.Index)
	if err != nil || info.MediaType != img.IndexMediaType {
		t.Fatalf("store: %+v, %v; want the index with its media type", info, err)
	}

	for _, method := range []string{http.MethodHead, http.MethodGet} {
		resp, body := e.do(method, e.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s by digest: status %d", method, resp.StatusCode)
		}
		if method == http.MethodGet && !bytes.Equal(body, want) {
			t.Fatalf("GET by digest: %d bytes, want the index", len(body))
		}
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Fatalf("upstream manifest GETs = %d after the requests by digest, want still 1", n)
	}
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d commits, want the manifest stored once", n)
	}
}

func TestTagCacheAndStaleIfError(t *testing.T) {
	e := newEnv(t, nil) // tag TTL 30 s, with the env's fake clock
	img := e.up.PushImage(t, "test/app", "v1", 100)
	url := e.url("/v2/test/app/manifests/v1")
	get := func() (*http.Response, []byte) { return e.do(http.MethodGet, url, acceptIndex) }

	get()
	heads := e.up.ManifestRequests(http.MethodHead)
	e.advance(29 * time.Second)
	get()
	if n := e.up.ManifestRequests(http.MethodHead); n != heads {
		t.Fatalf("a fresh tag was resolved upstream again (%d HEADs, want %d)", n, heads)
	}
	e.advance(2 * time.Second)
	get()
	if n := e.up.ManifestRequests(http.MethodHead); n != heads+1 {
		t.Fatalf("an expired tag was not revalidated (%d HEADs, want %d)", n, heads+1)
	}

	e.up.Close()
	e.advance(time.Minute)
	resp, body := get()
	if resp.StatusCode != 200 || digest.FromBytes(body) != img.Index {
		t.Fatalf("upstream down: status %d, want the last known manifest", resp.StatusCode)
	}
	if w := resp.Header.Get("Warning"); !strings.HasPrefix(w, "110") {
		t.Fatalf("stale answer without a Warning header (got %q)", w)
	}
	// Nothing known for another tag: the error names the registry.
	resp, body = e.do(http.MethodGet, e.url("/v2/test/app/manifests/v2"), acceptIndex)
	wantError(t, resp, body, http.StatusServiceUnavailable, ocierr.CodeUnavailable)
	if !strings.Contains(string(body), e.up.Host()) {
		t.Fatalf("error %s does not name the registry %s", body, e.up.Host())
	}
}

func TestTagTTLAlwaysAsk(t *testing.T) {
	e := newEnv(t, nil, WithTagTTL(AlwaysAsk))
	e.up.PushImage(t, "test/app", "v1", 100)
	for range 3 {
		e.do(http.MethodHead, e.url("/v2/test/app/manifests/v1"), acceptIndex)
	}
	if n := e.up.ManifestRequests(http.MethodHead); n != 3 {
		t.Fatalf("upstream HEADs = %d, want 3 with --tag-ttl 0", n)
	}
}

func TestConcurrentTagResolutionsCoalesce(t *testing.T) {
	release := make(chan struct{})
	headArrived := make(chan struct{}, 16)
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/manifests/v1") {
			headArrived <- struct{}{}
			<-release
		}
		return false
	})})
	img := e.up.PushImage(t, "test/app", "v1", 100)
	const clients = 8
	var wg sync.WaitGroup
	digests := make(chan string, clients)
	for range clients {
		wg.Go(func() {
			resp, _ := e.do(http.MethodHead, e.url("/v2/test/app/manifests/v1"), acceptIndex)
			digests <- resp.Header.Get("Docker-Content-Digest")
		})
	}
	for range clients {
		<-e.arrived
	}
	<-headArrived
	close(release)
	wg.Wait()
	close(digests)
	for d := range digests {
		if d != img.Index.String() {
			t.Fatalf("digest %q, want %s", d, img.Index)
		}
	}
	if n := e.up.ManifestRequests(http.MethodHead); n != 1 {
		t.Fatalf("upstream HEADs = %d for %d concurrent resolutions, want 1", n, clients)
	}
}

// TestStaleTagsExpireWithTheTTL: a tag answer older than the idle TTL is
// not served when upstream is down.
func TestStaleTagsExpireWithTheTTL(t *testing.T) {
	e := newEnv(t, nil, WithTagMaxStale(time.Hour))
	e.up.PushImage(t, "test/app", "v1", 100)
	url := e.url("/v2/test/app/manifests/v1")
	e.do(http.MethodGet, url, acceptIndex)
	e.up.Close()
	e.advance(59 * time.Minute)
	if resp, _ := e.do(http.MethodGet, url, acceptIndex); resp.StatusCode != 200 {
		t.Fatalf("within the TTL: status %d, want the stale answer", resp.StatusCode)
	}
	e.advance(2 * time.Minute)
	resp, body := e.do(http.MethodGet, url, acceptIndex)
	wantError(t, resp, body, http.StatusServiceUnavailable, ocierr.CodeUnavailable)
}

// TestTagByGetDoesNotWaitForOthersFill: on a registry whose HEAD carries
// no digest, a tag is resolved with a GET whose bytes the mirror keeps. If
// a fill of that manifest is already under way, started by a client that
// asked for it by digest, the tag's answer does not wait for that fill to
// end: keeping is best effort, and the fill belongs to its own client.
func TestTagByGetDoesNotWaitForOthersFill(t *testing.T) {
	var manifest atomic.Pointer[[]byte]
	var mediaType atomic.Pointer[string]
	halfSent := make(chan struct{}, 1)
	release := make(chan struct{})
	stall := registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/sha256:") {
			return false
		}
		// The by-digest GET: send half the manifest, then hold the rest.
		m := *manifest.Load()
		w.Header().Set("Content-Type", *mediaType.Load())
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(m).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(m)))
		w.Write(m[:len(m)/2])
		http.NewResponseController(w).Flush()
		halfSent <- struct{}{}
		<-release
		w.Write(m[len(m)/2:])
		return true
	})
	e := newEnv(t, []registrytest.Option{registrytest.WithoutHeadDigest(), stall})
	var once sync.Once
	releaseStall := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseStall) // before the registry closes, which waits for the hook
	img := e.up.PushImage(t, "test/app", "v1", 100)
	want := img.Blobs[img.Index]
	manifest.Store(&want)
	mediaType.Store(&img.IndexMediaType)

	// A client asks by digest: its fill begins with the first half, and
	// its answer's headers come as soon as the fill has begun.
	req, _ := http.NewRequest(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), nil)
	req.Header = acceptIndex.Clone()
	byDigest, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer byDigest.Body.Close()
	<-halfSent

	// A HEAD by tag answers while that fill is still held.
	head := make(chan *http.Response, 1)
	go func() {
		resp, _ := e.do(http.MethodHead, e.url("/v2/test/app/manifests/v1"), acceptIndex)
		head <- resp
	}()
	select {
	case resp := <-head:
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.Index.String() {
			t.Errorf("HEAD by tag: status %d, digest %q; want 200 and %s",
				resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), img.Index)
		}
	case <-time.After(10 * time.Second): // a failure bound, not a synchronisation
		t.Error("HEAD by tag waited for another client's fill of the manifest")
	}

	releaseStall()
	body, err := io.ReadAll(byDigest.Body)
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("GET by digest: %d bytes, %v; want the index", len(body), err)
	}
}

// TestTagTimeoutsOutlastTheBudget: a tag resolution or a listing is not
// cut before the upstream client's first-response budget is spent (which
// marks a silent registry down), and ends before containerd's 30 s.
func TestTagTimeoutsOutlastTheBudget(t *testing.T) {
	for name, d := range map[string]time.Duration{"tags": tagResolveTimeout, "listings": listingTimeout} {
		if d <= upstream.DefaultFirstResponseBudget || d >= 30*time.Second {
			t.Errorf("%s: timeout %s, want above the budget %s and below 30 s", name, d, upstream.DefaultFirstResponseBudget)
		}
	}
}
