package mirror

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/peer"
	"nodecache/pkg/upstream"
)

// The peer layer end to end: nodes on one machine, each a mirror Server
// with its own store, its own peer listener on 127.0.0.1 serving
// peer.NewHandler in front of it, and its own client-facing server; a
// static peer list; a real registry as upstream.
//
// That removing a node from the peer set moves only its digests is
// pkg/peer's TestOwnerStableUnderChange (through a watched peer file) and
// TestSimulateRebalance.

// peerNode is one node of a test cluster.
type peerNode struct {
	addr    string // the peer listener, as advertised
	m       *Server
	store   *diskstore.Store
	health  *peer.Health
	members *peer.Membership
	client  *peer.Client
	handler *peer.Handler
	peerSrv *httptest.Server // the peer API
	srv     *httptest.Server // the mirror, for clients
	up      *registrytest.Registry
	metrics *Metrics
}

// writeSecret writes a shared secret file and returns its path.
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "peer-secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const testPeerSecret = "0123456789abcdef0123456789abcdef"

// listenLocal opens a listener on a free port of 127.0.0.1.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serveOn starts an httptest server for h on l.
func serveOn(t *testing.T, l net.Listener, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	// Aborted transfers are expected here; net/http logging them after a
	// test ended would be noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// clusterOpts shapes a test cluster.
type clusterOpts struct {
	nodes int
	// peers, if set, are extra members of every node's peer list (fake
	// owners the test serves itself).
	extra []string
	// wrap, if set, wraps node i's peer handler.
	wrap func(i int, h http.Handler) http.Handler
	// log, if set, is node i's logger.
	log func(i int) *slog.Logger
}

// newCluster starts o.nodes nodes in front of up that know each other.
func newCluster(t *testing.T, up *registrytest.Registry, o clusterOpts) []*peerNode {
	t.Helper()
	secretPath := writeSecret(t, testPeerSecret)
	ls := make([]net.Listener, o.nodes)
	addrs := append([]string(nil), o.extra...)
	for i := range ls {
		ls[i] = listenLocal(t)
		addrs = append(addrs, ls[i].Addr().String())
	}
	nodes := make([]*peerNode, o.nodes)
	for i := range nodes {
		n := &peerNode{addr: ls[i].Addr().String(), up: up}
		logger := slog.New(slog.DiscardHandler)
		if o.log != nil {
			logger = o.log(i)
		}
		var err error
		n.store, err = diskstore.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n.health = peer.NewHealth()
		n.members, err = peer.NewMembership(n.addr, peer.Sources{Static: addrs}, n.health)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := peer.LoadSecret(secretPath)
		if err != nil {
			t.Fatal(err)
		}
		n.client = peer.NewClient(secret, n.health)
		upClient, err := upstream.New(map[string]string{up.Host(): up.URL()})
		if err != nil {
			t.Fatal(err)
		}
		n.metrics = NewMetrics()
		n.m = New(n.store, upClient,
			WithAllowList([]string{up.Host()}), WithDefaultRegistry(up.Host()),
			WithLogger(logger), WithPeers(Peers{Members: n.members, Client: n.client}), WithMetrics(n.metrics))
		n.handler = peer.NewHandler(secret, n.m.Allowed, n.m)
		var h http.Handler = n.handler
		if o.wrap != nil {
			h = o.wrap(i, h)
		}
		n.peerSrv = serveOn(t, ls[i], h)
		n.srv = httptest.NewServer(n.m)
		t.Cleanup(n.srv.Close)
		nodes[i] = n
	}
	return nodes
}

// ownerOf returns the node that owns d, as node 0 sees it; all agree.
func ownerOf(t *testing.T, nodes []*peerNode, d digest.Digest) (owner *peerNode, others []*peerNode) {
	t.Helper()
	addr, self := nodes[0].members.Owner(d)
	for _, n := range nodes {
		if (self && n == nodes[0]) || n.addr == addr {
			owner = n
		} else {
			others = append(others, n)
		}
	}
	if owner == nil {
		t.Fatalf("owner %s of %s is not a node", addr, d)
	}
	return owner, others
}

// runnerUp returns the node that owns d once owner is gone.
func runnerUp(t *testing.T, nodes []*peerNode, owner *peerNode, d digest.Digest) *peerNode {
	t.Helper()
	viewer := nodes[0]
	if viewer == owner {
		viewer = nodes[1]
	}
	addr, self := viewer.members.OwnerExcept(d, owner.addr)
	for _, n := range nodes {
		if (self && n == viewer) || (!self && n.addr == addr) {
			return n
		}
	}
	t.Fatalf("runner-up %s of %s is not a node", addr, d)
	return nil
}

// blobURL is the client URL of blob d of repo on node n.
func (n *peerNode) blobURL(repo string, d digest.Digest) string {
	return n.srv.URL + "/v2/" + repo + "/blobs/" + d.String() + "?ns=" + n.up.Host()
}

// getBlob GETs blob d through n and checks the bytes, with basic
// credentials if user is set.
func (n *peerNode) getBlob(repo string, d digest.Digest, user, pass string) error {
	req, err := http.NewRequest(http.MethodGet, n.blobURL(repo, d), nil)
	if err != nil {
		return err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := digest.SHA256.Digester()
	_, err = io.Copy(h.Hash(), resp.Body)
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("node %s: GET %s: status %d", n.addr, d, resp.StatusCode)
	case err != nil:
		return fmt.Errorf("node %s: GET %s: %w", n.addr, d, err)
	case h.Digest() != d:
		return fmt.Errorf("node %s: GET %s: got content %s", n.addr, d, h.Digest())
	}
	return nil
}

// counterValue returns the value of the series of c with label
// name=value.
func counterValue(t *testing.T, c prometheus.Collector, name, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series with %s=%q", name, value)
	return 0
}

// TestPeersColdPullFetchesOnce is the point of peers: three nodes
// cold-pulling the same image at once cause one upstream GET per blob,
// and every client gets the right bytes.
func TestPeersColdPullFetchesOnce(t *testing.T) {
	up := registrytest.Start(t)
	nodes := newCluster(t, up, clusterOpts{nodes: 3})
	img := up.PushSingleImage(t, "team/app", "v1", 3<<20, 2<<20, 4<<20, 1<<20)
	var blobs []digest.Digest
	blobs = append(blobs, img.Layers["linux/amd64"]...)
	blobs = append(blobs, img.Configs["linux/amd64"])
	up.ResetCounts()

	// Every node pulls every blob, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*len(blobs))
	for _, n := range nodes {
		for _, d := range blobs {
			wg.Go(func() {
				if err := n.getBlob(img.Repo, d, "", ""); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fromPeers := 0.0
	for _, n := range nodes {
		fromPeers += counterValue(t, n.client, "result", peer.ResultOK)
		if bad := n.health.Bad(); len(bad) > 0 {
			t.Errorf("node %s marked peers bad: %v", n.addr, bad)
		}
	}
	for _, d := range blobs {
		if got := up.BlobGets(d); got != 1 {
			t.Errorf("blob %s: %d upstream GETs, want 1", d, got)
		}
		owner, others := ownerOf(t, nodes, d)
		for _, n := range append(others, owner) {
			if _, err := n.store.Stat(d); err != nil {
				t.Errorf("blob %s not committed on node %s: %v", d, n.addr, err)
			}
		}
	}
	// Each blob is fetched from its owner by the two other nodes, and
	// their clients' requests are counted as served from a peer.
	if want := float64(2 * len(blobs)); fromPeers != want {
		t.Errorf("%v fetches from peers, want %v", fromPeers, want)
	}
	servedFromPeers := 0.0
	for _, n := range nodes {
		n.srv.Close() // waits for the handlers, which count as they return
		servedFromPeers += testutil.ToFloat64(n.metrics.requests.WithLabelValues("blobs", resultPeer))
	}
	if want := float64(2 * len(blobs)); servedFromPeers != want {
		t.Errorf("%v client requests counted as served from a peer, want %v", servedFromPeers, want)
	}
	t.Logf("%d nodes x %d blobs: %d upstream blob GETs, %v peer fetches", len(nodes), len(blobs), up.Count(http.MethodGet, registrytest.KindBlobs), fromPeers)
}

// killSwitch lets a peer handler send the first after bytes of a response,
// then holds it until the test has cut the owner's connections.
type killSwitch struct {
	after   int64
	reached chan struct{} // closed once after bytes were sent and flushed
	killed  chan struct{} // closed by the test once the owner is cut off
	once    sync.Once
}

func (k *killSwitch) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&killWriter{ResponseWriter: w, k: k}, r)
	})
}

type killWriter struct {
	http.ResponseWriter
	k *killSwitch
	n int64
}

func (w *killWriter) Write(p []byte) (int, error) {
	total := 0
	if room := w.k.after - w.n; room > 0 {
		n, err := w.ResponseWriter.Write(p[:min(room, int64(len(p)))])
		w.n += int64(n)
		total = n
		if err != nil || n == len(p) {
			return n, err
		}
	}
	http.NewResponseController(w.ResponseWriter).Flush()
	w.k.once.Do(func() { close(w.k.reached) })
	<-w.k.killed
	n, err := w.ResponseWriter.Write(p[total:])
	return total + n, err
}

func (w *killWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestPeerOwnerDiesMidTransfer kills the owner's peer server while it
// streams a blob to another node: the pull still completes with the right
// bytes, the rest coming from upstream with a Range request at the byte
// reached, and the owner is marked bad.
func TestPeerOwnerDiesMidTransfer(t *testing.T) {
	const size, cut = 4 << 20, 1 << 20
	var ranges []string
	var mu sync.Mutex
	up := registrytest.Start(t, registrytest.WithFault(func(w http.ResponseWriter, r *http.Request) bool {
		if rng := r.Header.Get("Range"); rng != "" && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			ranges = append(ranges, rng)
			mu.Unlock()
		}
		return false
	}))
	data := registrytest.Random(7, size)
	d := up.PushBlob(t, "team/app", data)
	k := &killSwitch{after: cut, reached: make(chan struct{}), killed: make(chan struct{})}
	var owner atomic.Int32
	owner.Store(-1)
	nodes := newCluster(t, up, clusterOpts{nodes: 3, wrap: func(i int, h http.Handler) http.Handler {
		killable := k.wrap(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if int(owner.Load()) == i {
				killable.ServeHTTP(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	o, _ := ownerOf(t, nodes, d)
	for i, n := range nodes {
		if n == o {
			owner.Store(int32(i))
		}
	}
	// The asker is the owner's runner-up: once the owner is gone it is
	// the node every reader of the owner continues from, so it continues
	// from upstream itself.
	asker := runnerUp(t, nodes, o, d)

	done := make(chan error, 1)
	go func() { done <- asker.getBlob("team/app", d, "", "") }()
	select {
	case <-k.reached:
	case err := <-done:
		t.Fatalf("the pull ended before the owner sent %d bytes: %v", cut, err)
	}
	o.peerSrv.CloseClientConnections()
	close(k.killed)
	o.peerSrv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !asker.health.IsBad(o.addr) {
		t.Error("the owner that died is not marked bad")
	}
	if got := counterValue(t, asker.client, "result", peer.ResultError); got != 1 {
		t.Errorf("%v failed peer fetches, want 1", got)
	}
	mu.Lock()
	got := ranges
	mu.Unlock()
	if len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", cut) {
		t.Errorf("upstream Range requests %q, want one from byte %d", got, cut)
	}
	// The owner's own fill was not disturbed: a client of the owner gets
	// the blob from it.
	if err := o.getBlob("team/app", d, "", ""); err != nil {
		t.Fatal(err)
	}
	if got := up.BlobGets(d); got != 2 {
		t.Errorf("%d upstream GETs of the blob, want 2 (the owner's, the asker's rest)", got)
	}
}

// lyingFetcher is a fake owner: it serves the right number of bytes with
// one of them flipped.
type lyingFetcher struct {
	data  map[digest.Digest][]byte
	asked atomic.Int32
}

func (f *lyingFetcher) ServePeer(w http.ResponseWriter, r *http.Request, registry, repo string, d digest.Digest) {
	f.asked.Add(1)
	b, ok := f.data[d]
	if !ok {
		http.Error(w, "unknown", http.StatusNotFound)
		return
	}
	bad := append([]byte(nil), b...)
	bad[len(bad)/2] ^= 0xff
	w.Header().Set("Content-Length", fmt.Sprint(len(bad)))
	w.Write(bad)
}

// signalHandler is a slog handler that closes a channel when a record with
// the given message is logged.
type signalHandler struct {
	msg  string
	ch   chan struct{}
	once *sync.Once
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestPeerCorruptContentIsCaught has a fake owner serve flipped bytes
// behind a real peer handler. Nothing corrupt is committed, the owner is
// marked bad, the client's first transfer is aborted (its bytes were
// streamed before the end showed the mismatch) and its retry succeeds
// from upstream.
func TestPeerCorruptContentIsCaught(t *testing.T) {
	up := registrytest.Start(t)
	fakeL := listenLocal(t)
	fake := &lyingFetcher{data: map[digest.Digest][]byte{}}
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, fakeL, peer.NewHandler(secret, func(string) bool { return true }, fake))
	caught := make(chan struct{})
	nodes := newCluster(t, up, clusterOpts{nodes: 1, extra: []string{fakeL.Addr().String()},
		log: func(int) *slog.Logger {
			return slog.New(signalHandler{msg: "peer sent content not matching its digest", ch: caught, once: &sync.Once{}})
		}})
	n := nodes[0]
	// A blob the fake owns.
	var data []byte
	var d digest.Digest
	for seed := uint64(1); ; seed++ {
		data = registrytest.Random(seed, 2<<20)
		d = digest.FromBytes(data)
		if owner, self := n.members.Owner(d); !self && owner == fakeL.Addr().String() {
			break
		}
	}
	up.PushBlob(t, "team/app", data)
	fake.data[d] = data
	up.ResetCounts()

	if err := n.getBlob("team/app", d, "", ""); err == nil {
		t.Fatal("the first GET got the whole blob from a lying peer")
	}
	if fake.asked.Load() == 0 {
		t.Fatal("the owner was never asked")
	}
	<-caught
	if _, err := n.store.Stat(d); err == nil {
		t.Fatal("corrupt content was committed")
	}
	if !n.health.IsBad(fakeL.Addr().String()) {
		t.Error("the lying peer is not marked bad")
	}
	if got := counterValue(t, n.client, "result", peer.ResultCorrupt); got != 1 {
		t.Errorf("nodecache_peer_fetches_total{result=corrupt} %v, want 1", got)
	}
	if err := n.getBlob("team/app", d, "", ""); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := fake.asked.Load(); got != 1 {
		t.Errorf("the lying peer was asked %d times, want 1", got)
	}
	if got := up.BlobGets(d); got != 1 {
		t.Errorf("%d upstream GETs, want 1 (the retry)", got)
	}
	if _, err := n.store.Stat(d); err != nil {
		t.Errorf("the retry did not commit the blob: %v", err)
	}
}

// peerGet sends a GET to a node's peer API, signed with secret if it is
// not nil.
func peerGet(t *testing.T, n *peerNode, secret *peer.Secret, repo string, d digest.Digest) (*http.Response, []byte) {
	t.Helper()
	u := n.peerSrv.URL + "/peer/v1/blobs/" + d.String() + "?ns=" + n.up.Host() + "&repo=" + repo
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if secret != nil {
		secret.Sign(req)
	}
	return send(t, req)
}

// TestPeerAPIRefusesUnauthenticated: through the real listener, a request
// without a signature or with another secret's gets 401 and reaches
// nothing; a signed one gets the blob.
func TestPeerAPIRefusesUnauthenticated(t *testing.T) {
	up := registrytest.Start(t)
	nodes := newCluster(t, up, clusterOpts{nodes: 1})
	d := up.PushBlob(t, "team/app", registrytest.Random(3, 64<<10))
	up.ResetCounts()
	other, err := peer.LoadSecret(writeSecret(t, "another-secret-of-32-bytes-xxxxx"))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*peer.Secret{"unsigned": nil, "other secret": other} {
		resp, body := peerGet(t, nodes[0], s, "team/app", d)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "UNAUTHORIZED") {
			t.Errorf("%s: status %d %s, want 401 UNAUTHORIZED", name, resp.StatusCode, body)
		}
	}
	if got := up.BlobGets(d); got != 0 {
		t.Errorf("unauthenticated peer requests caused %d upstream GETs", got)
	}
	if got := counterValue(t, nodes[0].handler, "result", "unauthorized"); got != 2 {
		t.Errorf("nodecache_peer_requests_total{result=unauthorized} %v, want 2", got)
	}
	ours, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := peerGet(t, nodes[0], ours, "team/app", d)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
		t.Fatalf("signed: status %d, content %s", resp.StatusCode, digest.FromBytes(body))
	}
}

// TestPeersNeverServePrivateContent: content fetched with credentials is
// refused to peers (403, not 401, so the asker does not take it for a
// secret mismatch), and a node whose client asks for it goes to upstream
// itself, which asks that client for credentials.
func TestPeersNeverServePrivateContent(t *testing.T) {
	up := registrytest.Start(t, registrytest.WithBasicAuth(map[string]string{"alice": "wonderland"}))
	nodes := newCluster(t, up, clusterOpts{nodes: 2})
	d := up.PushBlob(t, "team/private", registrytest.Random(5, 1<<20))
	owner, others := ownerOf(t, nodes, d)
	asker := others[0]

	// A client of the owner pulls it with credentials: private there.
	if err := owner.getBlob("team/private", d, "alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := peerGet(t, owner, secret, "team/private", d)
	wantError(t, resp, body, http.StatusForbidden, ocierr.CodeDenied)

	// Not on the owner yet: its fill from upstream needs credentials the
	// peer request does not carry, which is also a 403.
	d2 := up.PushBlob(t, "team/private", registrytest.Random(6, 1<<10))
	resp, body = peerGet(t, owner, secret, "team/private", d2)
	wantError(t, resp, body, http.StatusForbidden, ocierr.CodeDenied)

	// A client of the other node without credentials: the owner refuses,
	// the node asks upstream, and the client is asked to authenticate.
	resp, body = getWith(t, asker.blobURL("team/private", d), "", "")
	wantError(t, resp, body, http.StatusUnauthorized, ocierr.CodeUnauthorized)
	if got := counterValue(t, asker.client, "result", peer.ResultRefused); got != 1 {
		t.Errorf("nodecache_peer_fetches_total{result=refused} %v, want 1", got)
	}
	if asker.health.IsBad(owner.addr) {
		t.Error("an owner refusing private content was marked bad")
	}
	// With credentials the node never asks a peer, and upstream serves it.
	if err := asker.getBlob("team/private", d, "alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, asker.client, "result", peer.ResultRefused) + counterValue(t, asker.client, "result", peer.ResultOK); got != 1 {
		t.Errorf("%v peer fetches in all, want 1", got)
	}
}

// getWith GETs url, with basic credentials if user is set, and reads the
// body.
func getWith(t *testing.T, url, user, pass string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return send(t, req)
}
