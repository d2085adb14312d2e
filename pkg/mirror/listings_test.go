package mirror

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

// fakeReferrers answers referrers as a registry implementing the API does
// (the test registry does not): an index naming the artifactType asked
// for, and OCI-Filters-Applied when filtered. While failing is set, it
// answers 503.
func fakeReferrers(failing *atomic.Bool) registrytest.Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			return false
		}
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		at := r.URL.Query().Get("artifactType")
		if at != "" {
			w.Header().Set("OCI-Filters-Applied", "artifactType")
		}
		fmt.Fprintf(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"asked":%q}}`, at)
		return true
	}
}

// TestReferrersFilterKeptApart: referrers answers are kept per
// artifactType, each with its OCI-Filters-Applied, and each is served
// stale as it was given while upstream fails.
func TestReferrersFilterKeptApart(t *testing.T) {
	var failing atomic.Bool
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(fakeReferrers(&failing))})
	d := digest.FromString("subject")
	path := func(at string) string {
		p := e.srv.URL + "/v2/test/app/referrers/" + d.String() + "?ns=" + e.up.Host()
		if at != "" {
			p += "&artifactType=" + at
		}
		return p
	}
	types := []string{"", "application/vnd.example.sbom", "application/vnd.example.sig"}
	want := map[string]string{}
	for _, at := range types {
		resp, body := e.do(http.MethodGet, path(at), nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"asked":%q`, at)) {
			t.Fatalf("artifactType %q: status %d, %s", at, resp.StatusCode, body)
		}
		want[at] = string(body)
	}
	e.advance(DefaultListingTTL + time.Second)
	failing.Store(true)
	for _, at := range types {
		resp, body := e.do(http.MethodGet, path(at), nil)
		if resp.StatusCode != http.StatusOK || string(body) != want[at] || resp.Header.Get("Warning") == "" {
			t.Fatalf("artifactType %q while upstream fails: status %d, %s, want the stale answer", at, resp.StatusCode, body)
		}
		if filtered := resp.Header.Get("OCI-Filters-Applied") != ""; filtered != (at != "") {
			t.Fatalf("artifactType %q: OCI-Filters-Applied %q", at, resp.Header.Get("OCI-Filters-Applied"))
		}
	}
}

// TestPrivateListingsStayWithTheirClient: a listing upstream gave for a
// client's credentials is served stale to that client only; another
// client gets no answer of it, also while upstream fails.
func TestPrivateListingsStayWithTheirClient(t *testing.T) {
	e := newEnv(t, privateRegistry())
	e.up.PushSingleImage(t, "private/app", "v1", 100)
	path := "/v2/private/app/tags/list"
	if resp := getAs(t, e, path, "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice: status %d", resp.StatusCode)
	}
	e.advance(DefaultListingTTL + time.Second)
	e.up.SetFault(registrytest.FailWith(http.StatusServiceUnavailable, nil))
	if resp := getAs(t, e, path, "alice", "alice-secret"); resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") == "" {
		t.Fatalf("alice while upstream fails: status %d, want her stale listing", resp.StatusCode)
	}
	for _, who := range [][2]string{{"", ""}, {"bob", "bob-secret"}} {
		if resp := getAs(t, e, path, who[0], who[1]); resp.StatusCode == http.StatusOK {
			t.Fatalf("%q was served alice's listing", who[0])
		}
	}
}

// TestConcurrentListingsCoalesce: clients listing the same repository at
// once cause one upstream request, and all get its answer.
func TestConcurrentListingsCoalesce(t *testing.T) {
	release := make(chan struct{})
	listArrived := make(chan struct{}, 16)
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			listArrived <- struct{}{}
			<-release
		}
		return false
	})})
	e.up.PushSingleImage(t, "test/app", "v1", 100)
	const clients = 8
	var wg sync.WaitGroup
	bodies := make(chan string, clients)
	for range clients {
		wg.Go(func() {
			resp, body := e.do(http.MethodGet, e.url("/v2/test/app/tags/list"), nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
			bodies <- string(body)
		})
	}
	for range clients {
		<-e.arrived
	}
	<-listArrived
	close(release)
	wg.Wait()
	close(bodies)
	for b := range bodies {
		if !strings.Contains(b, `"v1"`) {
			t.Fatalf("body %s, want the tag list", b)
		}
	}
	if n := e.up.Count(http.MethodGet, registrytest.KindTags); n != 1 {
		t.Fatalf("upstream tags/list requests = %d for %d concurrent clients, want 1", n, clients)
	}
}

// TestLargeListingIsRelayed: an answer beyond maxListingSize is relayed
// whole, not kept.
func TestLargeListingIsRelayed(t *testing.T) {
	big := `{"name":"test/app","tags":["` + strings.Repeat("x", maxListingSize) + `"]}`
	e := newEnv(t, []registrytest.Option{registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/tags/list") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, big)
		return true
	})})
	for range 2 {
		resp, body := e.do(http.MethodGet, e.url("/v2/test/app/tags/list"), nil)
		if resp.StatusCode != http.StatusOK || string(body) != big {
			t.Fatalf("status %d, %d bytes; want the whole answer", resp.StatusCode, len(body))
		}
	}
	if n := e.up.Count(http.MethodGet, registrytest.KindTags); n < 3 {
		t.Fatalf("upstream asked %d times for two large listings, want each relayed (a flight and a relay each)", n)
	}
	if n := e.mirror.listings.lru.Len(); n != 0 {
		t.Fatalf("%d listings kept, want none", n)
	}
}

// TestListingsBytesStayBounded: answers kept again under the same key
// (a listing refreshed every DefaultListingTTL) replace the bytes they
// held instead of adding to them, and keys count too; the total never
// exceeds maxListingBytes and a set never spins on an empty cache.
func TestListingsBytesStayBounded(t *testing.T) {
	l := newListings(DefaultListingTTL, DefaultNotFoundTTL, 0, time.Now)
	body := make([]byte, maxListingSize)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2 * maxListingBytes / maxListingSize {
			l.set("registry/app|tags||?|", &listing{status: http.StatusOK, body: body})
		}
		l.set("registry/other|tags||?|", &listing{status: http.StatusOK, body: body})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("set did not return: the byte count outgrew what the cache holds")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lru.Len() != 2 {
		t.Fatalf("%d listings kept, want both", l.lru.Len())
	}
	var sum int64
	for _, k := range l.lru.Keys() {
		v, _ := l.lru.Peek(k)
		sum += v.size(k)
	}
	if l.bytes != sum {
		t.Fatalf("byte count %d, want the %d the kept listings hold", l.bytes, sum)
	}
}

// TestListingKeysCount: a key is counted with the body, so answers to
// clients sending long last= values cannot hold more than the bound.
func TestListingKeysCount(t *testing.T) {
	l := newListings(DefaultListingTTL, DefaultNotFoundTTL, 0, time.Now)
	last := strings.Repeat("x", 256<<10)
	for i := range 2 * maxListingBytes / len(last) {
		l.set(fmt.Sprintf("registry/app|tags||?last=%s%d|", last, i), &listing{status: http.StatusNotFound})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bytes > maxListingBytes {
		t.Fatalf("%d bytes kept, over the bound %d", l.bytes, maxListingBytes)
	}
	if l.lru.Len() >= 2*maxListingBytes/len(last) {
		t.Fatalf("%d listings kept, none evicted", l.lru.Len())
	}
}
