package pin

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/clocktest"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/upstream"
)

// node is one store and mirror, served on 127.0.0.1, in front of a real
// registry.
type node struct {
	up    *registrytest.Registry
	store *diskstore.Store
	src   *HTTPSource
	clk   *clocktest.Clock
	dir   string
}

func newNode(t *testing.T, storeOpts ...diskstore.Option) *node {
	t.Helper()
	n := &node{up: registrytest.Start(t), clk: clocktest.NewAt(time.Unix(1_700_000_000, 0)), dir: t.TempDir()}
	n.open(t, storeOpts...)
	return n
}

// open opens the store in n.dir and a mirror over it, both closed with
// the test.
func (n *node) open(t *testing.T, storeOpts ...diskstore.Option) {
	t.Helper()
	store, err := diskstore.Open(filepath.Join(n.dir, "store"), append([]diskstore.Option{diskstore.WithClock(n.clk.Now)}, storeOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(map[string]string{n.up.Host(): n.up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	// Tags are asked every time: the tests move them and refresh at once.
	m := mirror.New(store, client, mirror.WithAllowList([]string{n.up.Host()}), mirror.WithTagTTL(mirror.AlwaysAsk))
	srv := httptest.NewServer(m)
	t.Cleanup(func() {
		srv.Close()
		m.Close()
		store.Close()
	})
	n.store = store
	if n.src, err = NewHTTPSource(srv.URL); err != nil {
		t.Fatal(err)
	}
}

func (n *node) pinFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(n.dir, "pins.txt")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (n *node) has(d digest.Digest) bool {
	_, err := n.store.Stat(d)
	return err == nil
}

func allDigests(img registrytest.Image) []digest.Digest {
	var out []digest.Digest
	for d := range img.Blobs {
		out = append(out, d)
	}
	return out
}

func TestPinFetchesAndKeepsAnImage(t *testing.T) {
	n := newNode(t, diskstore.WithIdleTTL(time.Hour))
	img := n.up.PushImage(t, "app/web", "v1", 3000, 2000)
	m := New(n.pinFile(t, "# the web app", n.up.Host()+"/app/web:v1"), n.store, n.src)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range allDigests(img) {
		if !n.has(d) || !n.store.Pinned(d) {
			t.Fatalf("%s: stored %v, pinned %v", d, n.has(d), n.store.Pinned(d))
		}
	}
	if st := m.State(); st.Images != 1 || st.Failed != 0 || st.Missing != 0 || st.Bytes != sumSizes(img) {
		t.Fatalf("State = %+v, want %d bytes", st, sumSizes(img))
	}
	// A week idle: the sweep leaves every pinned entry.
	n.clk.Advance(7 * 24 * time.Hour)
	n.store.Sweep()
	for _, d := range allDigests(img) {
		if !n.has(d) {
			t.Fatalf("%s expired though pinned", d)
		}
	}
}

func sumSizes(img registrytest.Image) int64 {
	var s int64
	for _, b := range img.Blobs {
		s += int64(len(b))
	}
	return s
}

// TestPinSurvivesSizePressure: pulls of other images through the mirror
// evict each other, never the pinned image.
func TestPinSurvivesSizePressure(t *testing.T) {
	n := newNode(t, diskstore.WithMaxSize(40_000))
	pinned := n.up.PushSingleImage(t, "sys/pause", "3.10", 10_000)
	m := New(n.pinFile(t, n.up.Host()+"/sys/pause:3.10"), n.store, n.src)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		other := n.up.PushSingleImage(t, "apps/a", "v"+string(rune('0'+i)), 9_000)
		ref := Ref{Registry: n.up.Host(), Repository: "apps/a", Tag: other.Tag}
		img, err := Walk(context.Background(), n.src, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range img.Blobs {
			if err := n.src.Pull(context.Background(), ref, b, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := n.store.Stats(); st.Evictions == 0 || st.Bytes > 40_000 {
		t.Fatalf("want evictions within the bound: %+v", st)
	}
	for _, d := range allDigests(pinned) {
		if !n.has(d) {
			t.Fatalf("pinned %s evicted", d)
		}
	}
}

// TestPinnedTagMoves: a refresh after the tag moved fetches and pins the
// new image and lets go of the old one, except what another pin (the old
// image by digest) still holds.
func TestPinnedTagMoves(t *testing.T) {
	n := newNode(t)
	old := n.up.PushSingleImage(t, "sys/cni", "stable", 4000)
	oldRoot := old.Manifests["linux/amd64"]
	m := New(n.pinFile(t, n.up.Host()+"/sys/cni:stable"), n.store, n.src)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	moved := n.up.PushSingleImage(t, "sys/cni", "stable", 4000, 100)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range allDigests(moved) {
		if !n.has(d) || !n.store.Pinned(d) {
			t.Fatalf("new image's %s: stored %v, pinned %v", d, n.has(d), n.store.Pinned(d))
		}
	}
	if n.store.Pinned(oldRoot) {
		t.Fatal("the old image's manifest is still pinned after the tag moved")
	}
	// The old image by digest, next to the tag: shared blobs and its own
	// stay pinned while it is listed, and go when it is not.
	file := n.pinFile(t, n.up.Host()+"/sys/cni:stable", n.up.Host()+"/sys/cni@"+oldRoot.String())
	m2 := New(file, n.store, n.src)
	if err := m2.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(allDigests(old), allDigests(moved)...) {
		if !n.store.Pinned(d) {
			t.Fatalf("%s not pinned while an image holds it", d)
		}
	}
	n.pinFile(t, n.up.Host()+"/sys/cni@"+oldRoot.String())
	if err := m2.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range allDigests(old) {
		if !n.store.Pinned(d) {
			t.Fatalf("old %s unpinned though still listed by digest", d)
		}
	}
	if n.store.Pinned(moved.Manifests["linux/amd64"]) {
		t.Fatal("the image of the removed tag is still pinned")
	}
}

// TestPinnedTagMovesToAPartImage: while the new image of a moved tag
// cannot be fetched whole, the old image stays pinned next to what the new
// one has; the pass after it is whole lets the old one go.
func TestPinnedTagMovesToAPartImage(t *testing.T) {
	n := newNode(t)
	old := n.up.PushSingleImage(t, "sys/cni", "stable", 4000)
	oldRoot := old.Manifests["linux/amd64"]
	m := New(n.pinFile(t, n.up.Host()+"/sys/cni:stable"), n.store, n.src)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	moved := n.up.PushSingleImage(t, "sys/cni", "stable", 4000, 100)
	newLayer := moved.Layers["linux/amd64"][1]
	n.up.SetFault(registrytest.FailWith(http.StatusNotFound, registrytest.Path("", "/v2/sys/cni/blobs/"+newLayer.String())))
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := m.State(); st.Missing != 1 {
		t.Fatalf("State = %+v, want the new layer missing", st)
	}
	for _, d := range allDigests(old) {
		if !n.has(d) || !n.store.Pinned(d) {
			t.Fatalf("old image's %s let go for a part image: stored %v, pinned %v", d, n.has(d), n.store.Pinned(d))
		}
	}
	if !n.store.Pinned(moved.Manifests["linux/amd64"]) || !n.store.Pinned(newLayer) {
		t.Fatal("what the new image has so far is not pinned")
	}
	if imgs := m.Images(); len(imgs) != 1 || imgs[0].Root != oldRoot {
		t.Fatalf("Images = %+v, want the old image still the tag's", imgs)
	}
	n.up.SetFault(nil)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range allDigests(moved) {
		if !n.has(d) || !n.store.Pinned(d) {
			t.Fatalf("new image's %s: stored %v, pinned %v", d, n.has(d), n.store.Pinned(d))
		}
	}
	if n.store.Pinned(oldRoot) {
		t.Fatal("the old image is still pinned after the new one is whole")
	}
}

// TestPinsOverMaxSize: pins past the bound are kept, said so loudly once,
// and shown in the state the metric reads.
func TestPinsOverMaxSize(t *testing.T) {
	n := newNode(t, diskstore.WithMaxSize(5000))
	n.up.PushSingleImage(t, "sys/big", "v1", 3000, 3000)
	var logs bytes.Buffer
	m := New(n.pinFile(t, n.up.Host()+"/sys/big:v1"), n.store, n.src, WithMaxSize(5000),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	m.Reconcile(context.Background())
	st := m.State()
	if !st.Over || st.Missing == 0 {
		t.Fatalf("State = %+v, want over the bound with blobs missing", st)
	}
	if !strings.Contains(logs.String(), "EXCEED --max-size") {
		t.Fatalf("no loud warning in the log:\n%s", logs.String())
	}
	if s := n.store.Stats(); s.Bytes > 5000 {
		t.Fatalf("the store grew past its bound: %+v", s)
	}
	want := "# HELP nodecache_pins_over_max_size 1 if the pinned images alone exceed --max-size: they are kept and other fills stream uncached.\n" +
		"# TYPE nodecache_pins_over_max_size gauge\nnodecache_pins_over_max_size 1\n"
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "nodecache_pins_over_max_size"); err != nil {
		t.Fatal(err)
	}
}

// TestPinsSurviveRestartDuringOutage: after a restart with the registry
// down, the store still holds the pinned set it saved, and a pass that
// cannot resolve the tags keeps it whole.
func TestPinsSurviveRestartDuringOutage(t *testing.T) {
	n := newNode(t, diskstore.WithMaxSize(100_000))
	img := n.up.PushSingleImage(t, "sys/proxy", "v1", 5000)
	file := n.pinFile(t, n.up.Host()+"/sys/proxy:v1")
	if err := New(file, n.store, n.src).Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.up.Close()
	n.store.Close()
	n.open(t, diskstore.WithMaxSize(1000)) // smaller than the pins
	for _, d := range allDigests(img) {
		if !n.has(d) {
			t.Fatalf("%s evicted at restart", d)
		}
	}
	m := New(file, n.store, n.src)
	if err := m.Reconcile(context.Background()); err == nil {
		t.Fatal("Reconcile with the registry down succeeded")
	}
	want := allDigests(img)
	slices.Sort(want)
	if got := n.store.Pins(); !slices.Equal(got, want) {
		t.Fatalf("pins after a failed pass = %v, want %v", got, want)
	}
}

// TestPartImageAfterRestartKeepsTheSavedPins: after a restart the old
// image of a moved tag is not known; while the new one cannot be fetched
// whole, the saved pinned set stays.
func TestPartImageAfterRestartKeepsTheSavedPins(t *testing.T) {
	n := newNode(t)
	old := n.up.PushSingleImage(t, "sys/cni", "stable", 4000)
	file := n.pinFile(t, n.up.Host()+"/sys/cni:stable")
	if err := New(file, n.store, n.src).Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.store.Close()
	n.open(t)
	moved := n.up.PushSingleImage(t, "sys/cni", "stable", 4000, 100)
	newLayer := moved.Layers["linux/amd64"][1]
	n.up.SetFault(registrytest.FailWith(http.StatusNotFound, registrytest.Path("", "/v2/sys/cni/blobs/"+newLayer.String())))
	if err := New(file, n.store, n.src).Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range allDigests(old) {
		if !n.has(d) || !n.store.Pinned(d) {
			t.Fatalf("old image's %s let go after a restart: stored %v, pinned %v", d, n.has(d), n.store.Pinned(d))
		}
	}
}

// TestPinPlatforms: with a platform given, only its manifest, config and
// layers (and the index) are pinned.
func TestPinPlatforms(t *testing.T) {
	n := newNode(t)
	img := n.up.PushImage(t, "app/multi", "v1", 1000)
	m := New(n.pinFile(t, n.up.Host()+"/app/multi:v1"), n.store, n.src,
		WithPlatforms([]ocispec.Platform{{OS: "linux", Architecture: "arm64"}}))
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{img.Index, img.Manifests["linux/arm64"], img.Configs["linux/arm64"], img.Layers["linux/arm64"][0]} {
		if !n.store.Pinned(d) || !n.has(d) {
			t.Fatalf("arm64's %s not pinned and stored", d)
		}
	}
	if n.store.Pinned(img.Manifests["linux/amd64"]) || n.has(img.Layers["linux/amd64"][0]) {
		t.Fatal("amd64 pinned or fetched")
	}
}

// TestBadPinFileChangesNothing: a file that does not parse leaves the
// pins as they were.
func TestBadPinFileChangesNothing(t *testing.T) {
	n := newNode(t)
	img := n.up.PushSingleImage(t, "sys/dns", "v1", 1000)
	file := n.pinFile(t, n.up.Host()+"/sys/dns:v1")
	m := New(file, n.store, n.src)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.pinFile(t, "NOT A REFERENCE")
	if err := m.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("Reconcile = %v, want the bad line named", err)
	}
	if !n.store.Pinned(img.Manifests["linux/amd64"]) {
		t.Fatal("a bad pin file dropped the pins")
	}
}

// TestRunFollowsThePinFile: Run applies the file once its watch is in
// place, and again when it changes.
func TestRunFollowsThePinFile(t *testing.T) {
	n := newNode(t)
	a := n.up.PushSingleImage(t, "sys/a", "v1", 1000)
	b := n.up.PushSingleImage(t, "sys/b", "v1", 1000)
	file := n.pinFile(t, n.up.Host()+"/sys/a:v1")
	done := make(chan error, 16)
	m := New(file, n.store, n.src, withReconciledHook(func(err error) { done <- err }))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Error(err)
		}
	}()
	wait := func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no Reconcile")
		}
	}
	wait()
	if !n.store.Pinned(a.Manifests["linux/amd64"]) {
		t.Fatal("the pin file was not applied at start")
	}
	n.pinFile(t, n.up.Host()+"/sys/b:v1")
	for !n.store.Pinned(b.Manifests["linux/amd64"]) {
		wait() // a write may come as more than one change
	}
	if n.store.Pinned(a.Manifests["linux/amd64"]) {
		t.Fatal("a reference removed from the file is still pinned")
	}
}
