package mirror

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/tagstore"
	"nodecache/pkg/upstream"
)

// node is a mirror on a data directory, as the daemon runs it: the store
// and the tag records both on dir, so that it can be stopped and started
// again on the same directory.
type node struct {
	t      *testing.T
	store  *diskstore.Store
	tags   *tagstore.Store
	client *upstream.Client
	m      *Server
	srv    *httptest.Server
	ns     string
}

// openNode starts a mirror on dir whose registry ns is served at upURL.
func openNode(t *testing.T, dir, ns, upURL string, clientOpts []upstream.Option, opts ...Option) *node {
	t.Helper()
	store, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := tagstore.Open(filepath.Join(dir, "tags"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(map[string]string{ns: upURL}, clientOpts...)
	if err != nil {
		t.Fatal(err)
	}
	base := []Option{WithAllowList([]string{ns}), WithDefaultRegistry(ns), WithTagStore(tags)}
	n := &node{t: t, store: store, tags: tags, client: client, ns: ns, m: New(store, client, append(base, opts...)...)}
	n.srv = httptest.NewServer(n.m)
	t.Cleanup(n.stop)
	return n
}

// stop closes the mirror, its tag records and its store, as a clean
// shutdown does. It may be called more than once.
func (n *node) stop() {
	n.srv.Close()
	n.m.Close()
	n.client.Close()
	n.tags.Close()
	n.store.Close()
}

func (n *node) get(path string, header http.Header) (*http.Response, []byte) {
	n.t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.srv.URL+path+"?ns="+n.ns, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return send(n.t, req)
}

// TestTagsSurviveRestartDuringOutage: a tag resolved before a restart is
// resolved after it from the records on disk, although upstream is gone:
// the manifest is served, stale, from the store.
func TestTagsSurviveRestartDuringOutage(t *testing.T) {
	up := registrytest.Start(t)
	img := up.PushImage(t, "test/app", "v1", 100)
	dir := t.TempDir()
	n := openNode(t, dir, up.Host(), up.URL(), nil)
	if resp, body := n.get("/v2/test/app/manifests/v1", acceptIndex); resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
		t.Fatalf("before the restart: status %d", resp.StatusCode)
	}
	n.stop()
	up.Close()

	// An hour later: the record is stale, and upstream must be asked.
	later := func() time.Time { return time.Now().Add(time.Hour) }
	n = openNode(t, dir, up.Host(), up.URL(), nil, WithClock(later))
	resp, body := n.get("/v2/test/app/manifests/v1", acceptIndex)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
		t.Fatalf("after the restart, upstream gone: status %d, %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Warning") == "" || resp.Header.Get("Docker-Content-Digest") != img.Index.String() {
		t.Fatalf("headers %v, want the index's digest and a stale Warning", resp.Header)
	}
}

// TestTagsSurviveCrash: the records Run wrote are there after a crash
// (nothing closed: the next mirror opens the same directory).
func TestTagsSurviveCrash(t *testing.T) {
	up := registrytest.Start(t)
	img := up.PushImage(t, "test/app", "v1", 100)
	dir := t.TempDir()
	n := openNode(t, dir, up.Host(), up.URL(), nil)
	n.get("/v2/test/app/manifests/v1", acceptIndex)
	if err := n.tags.Flush(); err != nil { // what Run does within a second
		t.Fatal(err)
	}
	// No Close of anything: a kill -9. The store's lock goes with the
	// process; here, with the store.
	n.srv.Close()
	n.m.Close()
	n.store.Close()
	up.Close()

	tags, err := tagstore.Open(filepath.Join(dir, "tags"))
	if err != nil {
		t.Fatal(err)
	}
	defer tags.Close()
	rec, ok := tags.Get(up.Host() + "/test/app:v1|" + strings.Join(parseAccept(acceptIndex), ","))
	if !ok || rec.Digest != img.Index {
		t.Fatal("the tag record flushed before the crash is not on disk")
	}
}

// TestPrivateTagsStayInMemory: a tag resolved with a client's
// credentials is served to that client, and its record is neither in the
// shared records nor in the log on disk.
func TestPrivateTagsStayInMemory(t *testing.T) {
	up := registrytest.Start(t, privateRegistry()...)
	img := up.PushImage(t, "private/app", "v1", 100)
	dir := t.TempDir()
	n := openNode(t, dir, up.Host(), up.URL(), nil)
	req, _ := http.NewRequest(http.MethodGet, n.srv.URL+"/v2/private/app/manifests/v1?ns="+n.ns, nil)
	req.Header["Accept"] = acceptIndex["Accept"]
	req.SetBasicAuth("alice", "alice-secret")
	if resp, _ := send(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice: status %d", resp.StatusCode)
	}
	if n.tags.Len() != 0 || n.m.privateTags.Len() != 1 {
		t.Fatalf("shared records %d, private %d; want 0 and 1", n.tags.Len(), n.m.privateTags.Len())
	}
	n.stop()
	b, err := os.ReadFile(filepath.Join(dir, "tags", "tags.log"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(img.Index.Encoded())) || bytes.Contains(b, []byte("private/app")) {
		t.Fatalf("the private tag reached the disk: %s", b)
	}
}

// TestNotFoundIsRemembered: upstream's 404 for a tag and for a listing is
// answered again without asking for DefaultNotFoundTTL, and stays a 404,
// not a 503, while upstream is down.
func TestNotFoundIsRemembered(t *testing.T) {
	e := newEnv(t, nil)
	e.up.PushImage(t, "test/app", "v1", 100)
	paths := map[string]string{
		"tag":     "/v2/test/app/manifests/nope",
		"listing": "/v2/test/none/tags/list",
	}
	for name, path := range paths {
		resp, body := e.do(http.MethodGet, e.url(path), acceptIndex)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: status %d, want 404; %s", name, resp.StatusCode, body)
		}
	}
	asked := e.up.Count(http.MethodHead, "manifests") + e.up.Count(http.MethodGet, "tags")
	for name, path := range paths {
		if resp, _ := e.do(http.MethodGet, e.url(path), acceptIndex); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s again: status %d, want 404", name, resp.StatusCode)
		}
	}
	if now := e.up.Count(http.MethodHead, "manifests") + e.up.Count(http.MethodGet, "tags"); now != asked {
		t.Fatalf("upstream asked %d more times within the not-found TTL, want 0", now-asked)
	}
	e.advance(DefaultNotFoundTTL + time.Second)
	e.up.SetFault(registrytest.FailWith(http.StatusServiceUnavailable, nil))
	for name, path := range paths {
		resp, body := e.do(http.MethodGet, e.url(path), acceptIndex)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s, upstream failing: status %d, want the remembered 404; %s", name, resp.StatusCode, body)
		}
	}
}

// TestListingsStaleIfError: tags/list pages are kept per query, with
// upstream's Link header, and served stale while upstream fails; a page
// never asked for fails as before.
func TestListingsStaleIfError(t *testing.T) {
	e := newEnv(t, nil)
	for _, tag := range []string{"a", "b", "c"} {
		e.up.PushSingleImage(t, "test/app", tag, 10)
	}
	first := e.srv.URL + "/v2/test/app/tags/list?n=2&ns=" + e.up.Host()
	resp, want := e.do(http.MethodGet, first, nil)
	link := resp.Header.Get("Link")
	if resp.StatusCode != http.StatusOK || link == "" || !strings.Contains(string(want), `"a"`) || strings.Contains(string(want), `"c"`) {
		t.Fatalf("page 1: status %d, Link %q, %s", resp.StatusCode, link, want)
	}
	all := e.url("/v2/test/app/tags/list")
	_, wantAll := e.do(http.MethodGet, all, nil)

	gets := e.up.Count(http.MethodGet, "tags")
	if resp, body := e.do(http.MethodGet, first, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) || e.up.Count(http.MethodGet, "tags") != gets {
		t.Fatalf("fresh page: status %d, upstream asked %d more times", resp.StatusCode, e.up.Count(http.MethodGet, "tags")-gets)
	}

	e.advance(DefaultListingTTL + time.Second)
	e.up.SetFault(registrytest.FailWith(http.StatusServiceUnavailable, nil))
	for _, c := range []struct {
		url  string
		want []byte
	}{{first, want}, {all, wantAll}} {
		resp, body := e.do(http.MethodGet, c.url, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, c.want) || resp.Header.Get("Warning") == "" {
			t.Fatalf("%s while upstream fails: status %d, Warning %q, %s", c.url, resp.StatusCode, resp.Header.Get("Warning"), body)
		}
		if c.url == first && resp.Header.Get("Link") != link {
			t.Fatalf("stale page: Link %q, want upstream's %q", resp.Header.Get("Link"), link)
		}
	}
	other := e.srv.URL + "/v2/test/app/tags/list?n=1&ns=" + e.up.Host()
	if resp, _ := e.do(http.MethodGet, other, nil); resp.StatusCode < 500 {
		t.Fatalf("a page never asked while upstream fails: status %d, want an error", resp.StatusCode)
	}
}

// TestListingsAreBounded: the kept listings stay within their byte bound
// however many are asked for.
func TestListingsAreBounded(t *testing.T) {
	var now atomic.Int64
	l := newListings(time.Second, time.Second, 0, func() time.Time { return time.Unix(now.Load(), 0) })
	body := bytes.Repeat([]byte("x"), maxListingSize)
	for i := range 2 * maxListingBytes / maxListingSize {
		l.set(digest.FromString(string(rune(i))).String(), &listing{status: http.StatusOK, body: body})
	}
	if l.bytes > maxListingBytes {
		t.Fatalf("%d bytes kept, bound %d", l.bytes, maxListingBytes)
	}
	// Each counts its body and its key (a digest string, 71 bytes).
	if want := maxListingBytes / (maxListingSize + len(digest.FromString("").String())); l.lru.Len() != want {
		t.Fatalf("%d listings kept, want %d", l.lru.Len(), want)
	}
}

// TestCircuitServesStaleWithoutAskingUpstream: with upstream blackholed,
// the first request that needs upstream spends its budget and marks the
// registry down; after it, tag requests with a stale answer are served
// without contacting upstream, and those without one get a 503 with
// Retry-After, also without contacting it.
func TestCircuitServesStaleWithoutAskingUpstream(t *testing.T) {
	opened := make(chan struct{})
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvClient(t, store, nil, []upstream.Option{
		upstream.WithFirstResponseBudget(300 * time.Millisecond),
		upstream.WithProbeInterval(time.Hour, time.Hour),
		upstream.OnCircuitChange(func(_ string, open bool) {
			if open {
				close(opened)
			}
		}),
	})
	img := e.up.PushImage(t, "test/app", "v1", 100)
	tag := e.url("/v2/test/app/manifests/v1")
	if resp, _ := e.do(http.MethodGet, tag, acceptIndex); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: status %d", resp.StatusCode)
	}
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	e.up.SetFault(e.up.NoHeaders(gate, nil))
	e.advance(DefaultTagTTL + time.Second)

	if resp, _ := e.do(http.MethodGet, tag, acceptIndex); resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") == "" {
		t.Fatalf("first request, upstream blackholed: status %d, want the stale answer", resp.StatusCode)
	}
	<-opened
	before := e.up.ManifestRequests(http.MethodHead) + e.up.ManifestRequests(http.MethodGet)
	for range 20 {
		resp, body := e.do(http.MethodGet, tag, acceptIndex)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
			t.Fatalf("registry down: status %d, want the stale index", resp.StatusCode)
		}
	}
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/never-asked"), acceptIndex)
	wantError(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 of a registry marked down without Retry-After")
	}
	if after := e.up.ManifestRequests(http.MethodHead) + e.up.ManifestRequests(http.MethodGet); after != before {
		t.Fatalf("upstream asked %d times while marked down, want 0", after-before)
	}
	if !errors.Is(&upstream.CircuitOpenError{}, upstream.ErrUnreachable) {
		t.Fatal("a circuit error is not ErrUnreachable")
	}
}

// BenchmarkStaleTagRegistryDown: the answer to a tag request while its
// registry is blackholed and marked down, with a stale record: the
// outage figure in docs/operations.md.
func BenchmarkStaleTagRegistryDown(b *testing.B) {
	up := registrytest.Start(b)
	up.PushImage(b, "test/app", "v1", 100)
	store, err := diskstore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	opened := make(chan struct{})
	client, err := upstream.New(map[string]string{up.Host(): up.URL()},
		upstream.WithFirstResponseBudget(300*time.Millisecond), upstream.WithProbeInterval(time.Hour, time.Hour),
		upstream.OnCircuitChange(func(_ string, open bool) {
			if open {
				close(opened)
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	m := New(store, client, WithAllowList([]string{up.Host()}), WithDefaultRegistry(up.Host()),
		WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	defer m.Close()
	srv := httptest.NewServer(m)
	defer srv.Close()
	url := srv.URL + "/v2/test/app/manifests/v1?ns=" + up.Host()
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header["Accept"] = acceptIndex["Accept"]
		resp, _ := send(b, req)
		return resp
	}
	get()
	gate := registrytest.NewGate()
	defer gate.Release()
	up.SetFault(up.NoHeaders(gate, nil))
	now.Add(int64(time.Hour))
	get() // spends its budget, and marks the registry down
	<-opened
	b.ResetTimer()
	for b.Loop() {
		if resp := get(); resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") == "" {
			b.Fatalf("status %d, want the stale answer", resp.StatusCode)
		}
	}
}

// TestRegistryBackAfterOutage: once a registry marked down answers its
// probe again, tag requests go to it again: a tag moved during the
// outage is seen, fresh, without a Warning.
func TestRegistryBackAfterOutage(t *testing.T) {
	changes := make(chan bool, 4)
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvClient(t, store, nil, []upstream.Option{
		upstream.WithFirstResponseBudget(300 * time.Millisecond),
		upstream.WithProbeInterval(time.Millisecond, time.Millisecond),
		upstream.OnCircuitChange(func(_ string, open bool) { changes <- open }),
	})
	e.up.PushImage(t, "test/app", "v1", 100)
	tag := e.url("/v2/test/app/manifests/v1")
	e.do(http.MethodGet, tag, acceptIndex)
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	e.up.SetFault(e.up.NoHeaders(gate, nil)) // the probe is held too
	e.advance(DefaultTagTTL + time.Second)
	if resp, _ := e.do(http.MethodGet, tag, acceptIndex); resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") == "" {
		t.Fatalf("blackholed: status %d, want the stale answer", resp.StatusCode)
	}
	if open := <-changes; !open {
		t.Fatal("the circuit did not open")
	}
	moved := e.up.PushImage(t, "test/app", "v1", 200) // pushed during the outage
	e.up.SetFault(nil)
	gate.Release()
	if open := <-changes; open {
		t.Fatal("the circuit did not close")
	}
	resp, body := e.do(http.MethodGet, tag, acceptIndex)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != "" || !bytes.Equal(body, moved.Blobs[moved.Index]) {
		t.Fatalf("registry back: status %d, Warning %q; want the moved tag, fresh", resp.StatusCode, resp.Header.Get("Warning"))
	}
}

// TestAnonymousNotFoundSaysNothingToCredentials: a 404 recorded for a
// request without credentials (a registry may hide a private repository
// from anonymous requests) answers anonymous clients, but a client with
// credentials is asked upstream for with them.
func TestAnonymousNotFoundSaysNothingToCredentials(t *testing.T) {
	e := newEnv(t, privateRegistry())
	img := e.up.PushImage(t, "private/app", "v1", 100)
	key := e.up.Host() + "/private/app:v1|" + strings.Join(parseAccept(acceptIndex), ",")
	e.mirror.tags.Set(key, tagRecord{missing: true, size: -1})
	e.mirror.listings.set(e.up.Host()+"/private/app|tags|?|", &listing{status: http.StatusNotFound, at: *e.now.Load()})

	anonymous, _ := e.do(http.MethodGet, e.url("/v2/private/app/manifests/v1"), acceptIndex)
	if anonymous.StatusCode != http.StatusNotFound {
		t.Fatalf("anonymous: status %d, want the recorded 404", anonymous.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url("/v2/private/app/manifests/v1"), nil)
	req.Header["Accept"] = acceptIndex["Accept"]
	req.SetBasicAuth("alice", "alice-secret")
	resp, body := send(t, req)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
		t.Fatalf("alice: status %d, want the index asked for with her credentials", resp.StatusCode)
	}
	if resp := getAs(t, e, "/v2/private/app/tags/list", "alice", "alice-secret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's tags/list: status %d, want upstream's answer to her", resp.StatusCode)
	}
}
