package mirror

import (
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/clocktest"
	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

func randomBody(seed uint64, n int) ([]byte, digest.Digest) {
	b := registrytest.Random(seed, int64(n))
	return b, digest.FromBytes(b)
}

// TestMemCacheBudget: copies are kept within the byte budget, least
// recently used out first; a copy too large for the bound or the budget
// is not kept.
func TestMemCacheBudget(t *testing.T) {
	m := newMemCache(10 << 10)
	a, da := randomBody(1, 4<<10)
	b, db := randomBody(2, 4<<10)
	c, dc := randomBody(3, 4<<10)
	m.put(da, a)
	m.put(db, b)
	if _, ok := m.get(da); !ok { // a is now the most recently used
		t.Fatal("a is not kept")
	}
	m.put(dc, c) // 12 KiB > 10 KiB: b, the least recently used, goes
	if _, ok := m.get(db); ok {
		t.Error("b was kept beyond the budget")
	}
	for _, d := range []digest.Digest{da, dc} {
		if _, ok := m.get(d); !ok {
			t.Errorf("%s was evicted, not the least recently used", d)
		}
	}
	if n, used := m.usage(); n != 2 || used != memCost(a)+memCost(c) {
		t.Errorf("usage = %d entries, %d bytes; want 2, %d", n, used, memCost(a)+memCost(c))
	}
	big, dbig := randomBody(4, 11<<10)
	m.put(dbig, big)
	if _, ok := m.get(dbig); ok {
		t.Error("a copy larger than the budget was kept")
	}
	if n, _ := m.usage(); n != 2 {
		t.Errorf("putting a copy too large evicted others: %d entries left", n)
	}
	huge, dhuge := randomBody(5, maxMemManifestSize+1)
	m2 := newMemCache(1 << 20)
	m2.put(dhuge, huge)
	if n, _ := m2.usage(); n != 0 {
		t.Error("a copy larger than maxMemManifestSize was kept")
	}
	m.remove(da)
	if n, used := m.usage(); n != 1 || used != memCost(c) {
		t.Errorf("after remove: %d entries, %d bytes", n, used)
	}
	var off *memCache
	off.put(da, a)
	if _, ok := off.get(da); ok {
		t.Error("a nil cache kept a copy")
	}
}

// TestMemCacheConcurrent puts, gets and removes from many goroutines at
// once (run with -race); the budget holds throughout and at the end.
func TestMemCacheConcurrent(t *testing.T) {
	const budget = 64 << 10
	m := newMemCache(budget)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				b, d := randomBody(uint64(g*1000+i%20), 1<<10+i%7*1000)
				m.put(d, b)
				if got, ok := m.get(d); ok && digest.FromBytes(got.body) != d {
					t.Errorf("copy of %s has other bytes", d)
				}
				if i%3 == 0 {
					m.remove(d)
				}
				if _, used := m.usage(); used > budget {
					t.Errorf("%d bytes kept, budget %d", used, budget)
				}
			}
		}()
	}
	wg.Wait()
	n, used := m.usage()
	var sum int64
	for el := m.order.Front(); el != nil; el = el.Next() {
		sum += memCost(el.Value.(*memEntry).body)
	}
	if n != m.order.Len() || sum != used || used > budget {
		t.Errorf("usage %d entries, %d bytes; list %d entries, %d bytes", n, used, m.order.Len(), sum)
	}
}

// TestManifestServedFromMemory: a manifest asked for twice, by digest or
// by tag within the tag TTL, is copied into memory once and then served
// from there with the same answer; a HEAD is answered from memory too.
func TestManifestServedFromMemory(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	idx := img.Blobs[img.Index]
	for i, ref := range []string{"v1", "v1", img.Index.String(), "v1"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := e.do(method, e.url("/v2/test/app/manifests/"+ref), acceptIndex)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.Index.String() ||
				resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex || resp.ContentLength != int64(len(idx)) {
				t.Fatalf("%s %s (%d): status %d, headers %v", method, ref, i, resp.StatusCode, resp.Header)
			}
			if method == http.MethodGet && string(body) != string(idx) {
				t.Fatalf("GET %s (%d): other bytes", ref, i)
			}
		}
		// The first GET is served by the fill; the copy is made when the
		// manifest is first read from disk, once the fill's commit (which
		// follows the release of its last byte) is done.
		if i == 0 {
			waitCommitted(t, e, img.Index)
		}
		if n, used := e.mirror.mem.usage(); i > 0 && (n != 1 || used != memCost(idx)) {
			t.Fatalf("after request %d: %d manifests, %d bytes in memory; want 1, %d", i, n, used, memCost(idx))
		}
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != 1 {
		t.Errorf("upstream manifest GETs = %d, want 1", n)
	}
	if n := e.up.ManifestRequests(http.MethodHead); n != 1 {
		t.Errorf("upstream manifest HEADs = %d, want 1 (the tag within its TTL)", n)
	}
	// A range of a manifest in memory is served like one from disk.
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()),
		http.Header{"Accept": acceptIndex["Accept"], "Range": {"bytes=1-4"}})
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(idx[1:5]) {
		t.Errorf("range from memory: status %d, body %q", resp.StatusCode, body)
	}
}

// TestManifestMemoryBudget: the server keeps no more manifests in memory
// than its budget holds, and none with the budget off.
func TestManifestMemoryBudget(t *testing.T) {
	e := newEnv(t, nil, WithManifestMemory(1)) // no manifest fits
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
	e.do(http.MethodGet, e.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
	if n, _ := e.mirror.mem.usage(); n != 0 {
		t.Errorf("%d manifests in memory, budget 1 byte", n)
	}
	off := newEnv(t, nil, WithManifestMemory(-1))
	img = off.up.PushImage(t, "test/app", "v1", 1000)
	off.do(http.MethodGet, off.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
	resp, body := off.do(http.MethodGet, off.url("/v2/test/app/manifests/"+img.Index.String()), acceptIndex)
	if off.mirror.mem != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Index {
		t.Errorf("memory off: cache %v, status %d", off.mirror.mem, resp.StatusCode)
	}
}

// TestMemoryCopyGoesWithTheStoreEntry: once the store no longer holds a
// manifest (deleted, evicted, expired), its copy in memory is never
// served: the next request goes upstream, and gets upstream's answer.
func TestMemoryCopyGoesWithTheStoreEntry(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	path := e.url("/v2/test/app/manifests/" + img.Index.String())
	e.do(http.MethodGet, path, acceptIndex)
	waitCommitted(t, e, img.Index)
	e.do(http.MethodGet, path, acceptIndex)
	if n, _ := e.mirror.mem.usage(); n != 1 {
		t.Fatalf("%d manifests in memory, want 1", n)
	}
	if err := e.store.Delete(img.Index); err != nil {
		t.Fatal(err)
	}
	e.up.SetFault(registrytest.FailWith(http.StatusNotFound, registrytest.Route(http.MethodGet, "manifests")))
	resp, body := e.do(http.MethodGet, path, acceptIndex)
	wantError(t, resp, body, http.StatusNotFound, ocierr.CodeManifestUnknown)
	if n, _ := e.mirror.mem.usage(); n != 0 {
		t.Errorf("%d manifests in memory after the store let go of the only one", n)
	}
	e.up.SetFault(nil)
	gets := e.up.ManifestRequests(http.MethodGet)
	if resp, body := e.do(http.MethodGet, path, acceptIndex); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Index {
		t.Fatalf("after upstream recovered: status %d", resp.StatusCode)
	}
	if n := e.up.ManifestRequests(http.MethodGet); n != gets+1 {
		t.Errorf("upstream manifest GETs went from %d to %d, want one more", gets, n)
	}
}

// TestPrivateManifestInMemory: a private manifest kept in memory after
// alice pulled it is still given only to clients upstream confirms, by
// digest and by tag, as from disk.
func TestPrivateManifestInMemory(t *testing.T) {
	e := newEnv(t, privateRegistry())
	img := e.up.PushSingleImage(t, "private/app", "v1", 1000)
	e.up.PushSingleImage(t, "public/base", "v1", 1000)
	m := img.Manifests["linux/amd64"]
	for i := range 2 {
		if resp, _ := getManifestAs(t, e, "/v2/private/app/manifests/"+m.String(), "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
			t.Fatalf("alice: status %d", resp.StatusCode)
		}
		if i == 0 {
			waitCommitted(t, e, m)
		}
	}
	if n, _ := e.mirror.mem.usage(); n != 1 {
		t.Fatalf("%d manifests in memory, want 1", n)
	}
	var wg sync.WaitGroup
	for _, c := range []struct{ name, path, user, pass string }{
		{"anonymous", "private/app/manifests/" + m.String(), "", ""},
		{"anonymous, under a public repository", "public/base/manifests/" + m.String(), "", ""},
		{"bob", "private/app/manifests/" + m.String(), "bob", "bob-secret"},
		{"bob, by tag", "private/app/manifests/v1", "bob", "bob-secret"},
		{"a wrong password", "private/app/manifests/" + m.String(), "alice", "guess"},
	} {
		wg.Add(1)
		go func() { // at once, as clients come; -race checks the sharing
			defer wg.Done()
			resp, _ := getManifestAs(t, e, "/v2/"+c.path, c.user, c.pass)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", c.name, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if resp, _ := getManifestAs(t, e, "/v2/private/app/manifests/v1", "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Errorf("alice by tag: status %d", resp.StatusCode)
	}
}

// getManifestAs GETs a manifest from nodecache with Basic credentials
// (none if user is ""), accepting single-platform OCI manifests.
func getManifestAs(t *testing.T, e *env, path, user, pass string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return send(t, req)
}

// TestMemoryHitsCountAsUses: a manifest served from memory is still a
// use of its store entry, for eviction and --ttl, at least once per
// memRecheck.
func TestMemoryHitsCountAsUses(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_700_000_000, 0))
	e := newEnvStore(t, []diskstore.Option{diskstore.WithClock(clk.Now)}, nil, WithClock(clk.Now))
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	path := e.url("/v2/test/app/manifests/" + img.Index.String())
	for range 3 { // a fill, a read from disk that copies it, a hit
		if resp, _ := e.do(http.MethodGet, path, acceptIndex); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for i := range 3 {
		clk.Advance(memRecheck + time.Second)
		if resp, _ := e.do(http.MethodGet, path, acceptIndex); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		info, err := e.store.Stat(img.Index)
		if err != nil || !info.Accessed.Equal(clk.Now()) {
			t.Fatalf("hit %d at %v: the store's last use is %v (%v)", i, clk.Now(), info.Accessed, err)
		}
	}
	if n, _ := e.mirror.mem.usage(); n != 1 {
		t.Errorf("%d manifests in memory, want 1", n)
	}
}

// TestTagWithinTTLNeedsNoDisk: once a manifest is in memory, a tag
// within its TTL is answered without reading the disk: with the
// manifest's file gone from under the store (its index still holds the
// entry), GET and HEAD by tag still answer, from memory and the tag
// record.
func TestTagWithinTTLNeedsNoDisk(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 1000)
	path := e.url("/v2/test/app/manifests/v1")
	for i := range 3 { // a fill, a read from disk that copies it, a hit
		e.do(http.MethodGet, path, acceptIndex)
		if i == 0 {
			waitCommitted(t, e, img.Index)
		}
	}
	hex := img.Index.Encoded()
	if err := os.Remove(filepath.Join(e.store.Root(), "blobs", "sha256", hex[:2], hex)); err != nil {
		t.Fatal(err)
	}
	heads, gets := e.up.ManifestRequests(http.MethodHead), e.up.ManifestRequests(http.MethodGet)
	resp, body := e.do(http.MethodGet, path, acceptIndex)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Index {
		t.Fatalf("GET by tag: status %d, body %s", resp.StatusCode, digest.FromBytes(body))
	}
	if resp, _ := e.do(http.MethodHead, path, acceptIndex); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Docker-Content-Digest") != img.Index.String() {
		t.Fatalf("HEAD by tag: status %d", resp.StatusCode)
	}
	if h, g := e.up.ManifestRequests(http.MethodHead), e.up.ManifestRequests(http.MethodGet); h != heads || g != gets {
		t.Errorf("upstream manifest HEADs %d → %d, GETs %d → %d; want none", heads, h, gets, g)
	}
}

// waitCommitted returns once the fill of d is committed to the store. A
// fill's readers get its last byte before the commit (fsync, rename), so
// a request that follows at once may still be served from the fill; a
// manifest is copied into memory when it is read from the store.
func waitCommitted(t *testing.T, e *env, d digest.Digest) {
	t.Helper()
	if _, err := e.store.Stat(d); err != nil { // Stat waits for a commit under way
		t.Fatalf("%s not committed: %v", d, err)
	}
}

// TestHitReadsClockOnce: a manifest hit from memory, by digest or by
// tag, reads the server's clock once for its lookups of the tag record
// and of the copy in memory (Server.clock), where it read it for each.
func TestHitReadsClockOnce(t *testing.T) {
	var reads atomic.Int64
	at := time.Unix(1_700_000_000, 0)
	e := newEnv(t, nil, WithClock(func() time.Time { reads.Add(1); return at }))
	img := e.up.PushSingleImage(t, "test/app", "v1", 1024)
	d := img.Manifests["linux/amd64"]
	accept := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	for _, ref := range []string{d.String(), "v1"} {
		url := e.url("/v2/test/app/manifests/" + ref)
		for range 2 { // fills, then copies into memory
			if resp, _ := e.do(http.MethodGet, url, accept); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: status %d", ref, resp.StatusCode)
			}
			<-e.served
			if _, err := e.store.Stat(d); err != nil {
				t.Fatalf("manifest not committed after a full GET: %v", err)
			}
		}
		before := reads.Load()
		resp, _ := e.do(http.MethodGet, url, accept)
		<-e.served
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("GET %s: status %d", ref, resp.StatusCode)
		}
		if n := reads.Load() - before; n != 1 {
			t.Errorf("a hit by %s read the clock %d times, want 1", ref, n)
		}
	}
}
