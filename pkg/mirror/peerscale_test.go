package mirror

import (
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/clocktest"
	"nodecache/internal/registrytest"
	"nodecache/pkg/peer"
)

// scaleImage pushes an image of one large layer and small ones and
// returns its blobs (the large layer first) and its size in bytes.
func scaleImage(t *testing.T, up *registrytest.Registry) (repo string, blobs []digest.Digest, size int64) {
	t.Helper()
	img := up.PushSingleImage(t, "team/app", "v1", 4<<20, 16<<10, 8<<10)
	blobs = append(blobs, img.Layers["linux/amd64"]...)
	blobs = append(blobs, img.Configs["linux/amd64"])
	up.ResetCounts()
	return img.Repo, blobs, 4<<20 + 16<<10 + 8<<10 + 4<<10 // the config is well under 4 KiB
}

// ownerNode returns the node that owns d.
func (c *scaleCluster) ownerNode(d digest.Digest) *scaleNode {
	c.t.Helper()
	addr, self := c.nodes[0].members.Owner(d)
	for _, n := range c.nodes {
		if (self && n == c.nodes[0]) || n.addr == addr {
			return n
		}
	}
	c.t.Fatalf("owner %s of %s is not a node", addr, d)
	return nil
}

func (c *scaleCluster) except(skip ...*scaleNode) []*scaleNode {
	var out []*scaleNode
next:
	for _, n := range c.nodes {
		for _, s := range skip {
			if n == s {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

// checkErrs fails the test for every pull error.
func checkErrs(t *testing.T, errs <-chan error) {
	t.Helper()
	for err := range errs {
		t.Error(err)
	}
}

// checkEgress checks that no node sent more than (F+1) images to peers,
// and returns the busiest node's egress in images.
func (c *scaleCluster) checkEgress(image int64) float64 {
	c.t.Helper()
	busiest := int64(0)
	for _, n := range c.nodes {
		busiest = max(busiest, n.sent.Load())
	}
	if limit := int64(c.fan+1) * image; busiest > limit {
		c.t.Errorf("busiest node sent %d bytes to peers, more than F+1 = %d images (%d bytes)", busiest, c.fan+1, limit)
	}
	return float64(busiest) / float64(image)
}

// TestPeersRolloutBoundedFanout: twelve nodes cold-pull an image at once
// with a fan-out of 3. Upstream sends each blob once, no node sends more
// than F+1 images to peers, and every client gets verified bytes.
func TestPeersRolloutBoundedFanout(t *testing.T) {
	const k, f = 12, 3
	up := registrytest.Start(t)
	repo, blobs, image := scaleImage(t, up)
	c := newScaleCluster(t, up, k, f)
	g := c.holdAt(256 << 10)
	errs := pullEvery(c.nodes, repo, blobs)
	c.waitStreams(blobs[0], k-1) // every other node receives the layer from someone
	g.release()
	checkErrs(t, errs)
	for _, d := range blobs {
		if got := up.BlobGets(d); got != 1 {
			t.Errorf("%d upstream GETs of %s, want 1", got, d)
		}
	}
	t.Logf("busiest egress %.2f images", c.checkEgress(image))
	for _, n := range c.nodes {
		if bad := n.health.Bad(); len(bad) > 0 {
			t.Errorf("node %s marked %v bad", n.addr, bad)
		}
	}
}

// TestPeersWarmRolloutHoldersServe: three nodes, the owner among them,
// hold the image; nine more pull it at once. Upstream is not asked, the
// fan-out bound holds, and the earlier holders share the upload.
func TestPeersWarmRolloutHoldersServe(t *testing.T) {
	const k, f = 12, 3
	up := registrytest.Start(t)
	repo, blobs, image := scaleImage(t, up)
	c := newScaleCluster(t, up, k, f)
	o := c.ownerNode(blobs[0])
	first := append([]*scaleNode{o}, c.except(o)[:2]...)
	for _, n := range first {
		checkErrs(t, pullEvery([]*scaleNode{n}, repo, blobs))
	}
	gets := up.Count(http.MethodGet, registrytest.KindBlobs)
	for _, n := range c.nodes {
		n.sent.Store(0)
	}
	rest := c.except(first...)
	g := c.holdAt(256 << 10)
	errs := pullEvery(rest, repo, blobs)
	c.waitStreams(blobs[0], len(rest))
	g.release()
	checkErrs(t, errs)
	if got := up.Count(http.MethodGet, registrytest.KindBlobs) - gets; got != 0 {
		t.Errorf("%d upstream blob GETs in the warm rollout, want 0", got)
	}
	t.Logf("busiest egress %.2f images", c.checkEgress(image))
	for _, h := range first[1:] {
		if h.sent.Load() == 0 {
			t.Errorf("holder %s served nothing in the warm rollout", h.addr)
		}
	}
}

// TestPeersOwnerKilledOneSourceContinues: the owner dies while eight
// nodes receive a layer through it and its tree. Every pull completes,
// and upstream sends at most one image more than the one cold fetch: the
// receivers continue from one node, not each from upstream.
func TestPeersOwnerKilledOneSourceContinues(t *testing.T) {
	const k, f = 8, 3
	up := registrytest.Start(t)
	repo, blobs, image := scaleImage(t, up)
	c := newScaleCluster(t, up, k, f)
	o := c.ownerNode(blobs[0])
	checkErrs(t, pullEvery([]*scaleNode{o}, repo, blobs))
	base := up.BytesSent()
	rest := c.except(o)
	g := c.holdAt(1 << 20)
	errs := pullEvery(rest, repo, blobs)
	c.waitStreams(blobs[0], len(rest))
	o.kill()
	g.release()
	checkErrs(t, errs)
	if extra := up.BytesSent() - base; extra > image {
		t.Errorf("upstream sent %d bytes after the owner died, more than one image (%d)", extra, image)
	}
}

// TestPeersRelayKilledReceiversRecover: a node that relays a layer to
// others dies mid-stream; its receivers continue elsewhere and every
// pull completes with one upstream GET per blob.
func TestPeersRelayKilledReceiversRecover(t *testing.T) {
	const k, f = 8, 2
	up := registrytest.Start(t)
	repo, blobs, _ := scaleImage(t, up)
	c := newScaleCluster(t, up, k, f)
	o := c.ownerNode(blobs[0])
	g := c.holdAt(1 << 20)
	errs := pullEvery(c.nodes, repo, blobs)
	c.waitStreams(blobs[0], k-1)
	var relay *scaleNode
	for _, n := range c.except(o) {
		if n.fanout.Streams(blobs[0]) > 0 {
			relay = n
			break
		}
	}
	if relay == nil {
		t.Fatal("no node relays the layer")
	}
	relay.kill()
	g.release()
	checkErrs(t, errs)
	for _, d := range blobs {
		if got := up.BlobGets(d); got != 1 {
			t.Errorf("%d upstream GETs of %s, want 1", got, d)
		}
	}
}

// TestPeersLyingRelayMarkedBad: the owner points an asker to a relay that
// serves flipped bytes. Nothing wrong is committed, the relay is marked
// bad (the owner is not), and the retry is served right without asking
// upstream again.
func TestPeersLyingRelayMarkedBad(t *testing.T) {
	up := registrytest.Start(t)
	lies := map[digest.Digest][]byte{}
	fake := newLyingNode(t, lies)
	c := newScaleCluster(t, up, 3, 1)
	all := append(c.addrs(), fake)
	caught := make(chan struct{})
	for i, n := range c.nodes {
		var extra []Option
		if i == 1 {
			extra = []Option{WithLogger(slog.New(signalHandler{msg: "peer sent content not matching its digest", ch: caught, once: &sync.Once{}}))}
		}
		c.build(n, all, extra)
	}
	// A blob that node 0 owns, so node 1 asks it. The fake has nothing
	// to say of it while node 0 fills it (node 0 asks it, as it asks
	// every node that may hold the blob); it lies once node 0 holds it.
	var data []byte
	var d digest.Digest
	for seed := uint64(1); ; seed++ {
		data = registrytest.Random(seed, 1<<20)
		d = digest.FromBytes(data)
		if _, self := c.nodes[0].members.Owner(d); self {
			break
		}
	}
	up.PushBlob(t, "team/app", data)
	up.ResetCounts()
	o, asker := c.nodes[0], c.nodes[1]
	if err := o.get("team/app", d); err != nil {
		t.Fatal(err)
	}
	lies[d] = data
	release, _ := o.fanout.Admit(d, peer.Ask{From: fake}) // the fake fills the one slot
	defer release(false)
	if err := asker.get("team/app", d); err == nil {
		t.Fatal("the pull through a lying relay succeeded")
	}
	select {
	case <-caught:
	case <-time.After(30 * time.Second): // bounds a failing test only
		t.Fatal("the asker never caught the lying relay's bytes")
	}
	if _, err := asker.store.Stat(d); err == nil {
		t.Fatal("corrupt content was committed")
	}
	if !asker.health.IsBad(fake) {
		t.Error("the lying relay is not marked bad")
	}
	if asker.health.IsBad(o.addr) {
		t.Error("the owner, which sent nothing wrong, is marked bad")
	}
	if err := asker.get("team/app", d); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := up.BlobGets(d); got != 1 {
		t.Errorf("%d upstream GETs, want 1", got)
	}
}

// newLyingNode starts a peer API whose node serves data with a byte
// flipped, and returns its address.
func newLyingNode(t *testing.T, data map[digest.Digest][]byte) string {
	t.Helper()
	l := listenLocal(t)
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, l, peer.NewHandler(secret, func(string) bool { return true }, &lyingFetcher{data: data}))
	return l.Addr().String()
}

// TestPeersJoinCostsNoUpstream: eight nodes hold an image; a ninth joins
// and every node learns of it. Whatever the new node now owns, it gets
// from a node that holds it (the previous owner comes next in rendezvous
// order): upstream is not asked.
func TestPeersJoinCostsNoUpstream(t *testing.T) {
	up := registrytest.Start(t)
	c := newScaleCluster(t, up, 8, peer.DefaultFanout)
	joined := c.newNode()
	after, err := peer.NewMembership(joined.addr, peer.Sources{Static: append(c.addrs(), joined.addr)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var blobs []digest.Digest
	owned := 0
	for i := 0; owned < 3 || len(blobs) < 8; i++ { // some the new node will own, some not
		data := registrytest.Random(uint64(200+i), 64<<10)
		_, self := after.Owner(digest.FromBytes(data))
		if self && owned < 3 {
			owned++
		} else if self || len(blobs)-owned >= 5 {
			continue
		}
		blobs = append(blobs, up.PushBlob(t, "team/app", data))
	}
	checkErrs(t, pullEvery(c.nodes, "team/app", blobs))
	gets := up.Count(http.MethodGet, registrytest.KindBlobs)
	c.nodes = append(c.nodes, joined)
	for _, n := range c.nodes {
		c.build(n, c.addrs(), nil)
	}
	checkErrs(t, pullEvery([]*scaleNode{joined}, "team/app", blobs))
	if got := up.Count(http.MethodGet, registrytest.KindBlobs) - gets; got != 0 {
		t.Errorf("%d upstream blob GETs after the join (the new node owns %d digests), want 0", got, owned)
	}
}

// TestPeersTransferOutlastsFillTimeout: a peer transfer that takes longer
// than the fill timeout but keeps sending completes: the timeout counts
// time without progress.
func TestPeersTransferOutlastsFillTimeout(t *testing.T) {
	const fillTimeout = 300 * time.Millisecond
	up := registrytest.Start(t)
	data := registrytest.Random(77, 1<<20)
	d := up.PushBlob(t, "team/app", data)
	// The nodes' clock stands still: silence is measured by it, so no
	// pause of this machine counts as one; an absolute limit (real time)
	// would still cut the transfer.
	c := newScaleCluster(t, up, 2, peer.DefaultFanout, WithFillTimeout(fillTimeout), WithClock(clocktest.New().Now))
	o := c.ownerNode(d)
	if err := o.get("team/app", d); err != nil {
		t.Fatal(err)
	}
	// 1 MiB in writes of at most 32 KiB, each followed by 20 ms: the
	// transfer takes at least 32 × 20 ms = 640 ms, over twice the fill
	// timeout, with gaps far below it.
	c.pace.Store(int64(20 * time.Millisecond))
	start := time.Now()
	if err := c.except(o)[0].get("team/app", d); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < fillTimeout {
		t.Fatalf("the transfer took %s, not longer than the fill timeout %s: the test proves nothing", took, fillTimeout)
	}
	if got := up.BlobGets(d); got != 1 {
		t.Errorf("%d upstream GETs, want 1", got)
	}
}

// TestPeersDeadOwnerRunnerUpFills: the owner of a layer is dead before a
// rollout starts. Every node that finds it dead asks the runner-up, which
// fills once: upstream still sends each blob once.
func TestPeersDeadOwnerRunnerUpFills(t *testing.T) {
	const k = 8
	up := registrytest.Start(t)
	repo, blobs, _ := scaleImage(t, up)
	c := newScaleCluster(t, up, k, peer.DefaultFanout)
	o := c.ownerNode(blobs[0])
	o.kill()
	checkErrs(t, pullEvery(c.except(o), repo, blobs))
	if got := up.BlobGets(blobs[0]); got != 1 {
		t.Errorf("%d upstream GETs of the dead owner's layer, want 1", got)
	}
}

// TestPeersLeaveCostsNoUpstream: the owner of some blobs and one other
// node hold them; the owner leaves and every node learns of it. A node
// that lacks the blobs pulls them: each new owner that lacks one finds it
// on the holder before upstream.
func TestPeersLeaveCostsNoUpstream(t *testing.T) {
	up := registrytest.Start(t)
	c := newScaleCluster(t, up, 8, peer.DefaultFanout)
	leaver, holder := c.nodes[0], c.nodes[1]
	var blobs []digest.Digest
	for i := 0; len(blobs) < 6; i++ { // blobs the leaver owns
		data := registrytest.Random(uint64(300+i), 64<<10)
		if _, self := leaver.members.Owner(digest.FromBytes(data)); self {
			blobs = append(blobs, up.PushBlob(t, "team/app", data))
		}
	}
	checkErrs(t, pullEvery([]*scaleNode{leaver, holder}, "team/app", blobs))
	gets := up.Count(http.MethodGet, registrytest.KindBlobs)
	leaver.kill()
	c.nodes = c.nodes[1:]
	for _, n := range c.nodes {
		c.build(n, c.addrs(), nil)
	}
	checkErrs(t, pullEvery([]*scaleNode{c.nodes[1]}, "team/app", blobs))
	if got := up.Count(http.MethodGet, registrytest.KindBlobs) - gets; got != 0 {
		t.Errorf("%d upstream blob GETs after the owner left, want 0", got)
	}
}

// redirectingFetcher is a peer that points every ask to the node to.
type redirectingFetcher struct{ to string }

func (f redirectingFetcher) ServePeer(w http.ResponseWriter, _ *http.Request, _, _ string, _ digest.Digest) {
	peer.Redirect(w, f.to)
}

// TestPeersRedirectOnlyToPeers: the owner of a blob points its askers to
// an address outside the peer set. The asker never contacts it (it would
// send it a signed request and take its bytes), and pulls the blob
// elsewhere.
func TestPeersRedirectOnlyToPeers(t *testing.T) {
	up := registrytest.Start(t)
	var outsiderHits atomic.Int32
	outsider := listenLocal(t)
	serveOn(t, outsider, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		outsiderHits.Add(1)
		http.Error(w, "not a peer", http.StatusNotFound)
	}))
	fakeL := listenLocal(t)
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, fakeL, peer.NewHandler(secret, func(string) bool { return true }, redirectingFetcher{to: outsider.Addr().String()}))
	fake := fakeL.Addr().String()
	c := newScaleCluster(t, up, 2, peer.DefaultFanout)
	all := append(c.addrs(), fake)
	for _, n := range c.nodes {
		c.build(n, all, nil)
	}
	var d digest.Digest
	for seed := uint64(1); ; seed++ { // a blob the fake owns
		data := registrytest.Random(seed, 64<<10)
		if owner, _ := c.nodes[0].members.Owner(digest.FromBytes(data)); owner == fake {
			d = up.PushBlob(t, "team/app", data)
			break
		}
	}
	up.ResetCounts()
	if err := c.nodes[0].get("team/app", d); err != nil {
		t.Fatal(err)
	}
	if n := outsiderHits.Load(); n != 0 {
		t.Errorf("the address outside the peer set got %d requests, want 0", n)
	}
	if got := up.BlobGets(d); got != 1 {
		t.Errorf("%d upstream GETs, want 1", got)
	}
}

// An asker outside this node's peer set is served but never remembered,
// so no other asker is ever pointed to it.
func TestPeersAdmitRemembersPeersOnly(t *testing.T) {
	c := newScaleCluster(t, registrytest.Start(t), 2, 1)
	m, other := c.nodes[0].m.Load(), c.nodes[1].addr
	d := digest.FromString("layer")
	for _, from := range []string{"10.9.9.9:5051", other} {
		release, to := m.admit(d, peer.Ask{From: from})
		if release == nil {
			t.Fatalf("the ask from %s was pointed to %q, want served", from, to)
		}
		release(true)
	}
	if got := c.nodes[0].fanout.Holders(d); !slices.Equal(got, []string{other}) {
		t.Errorf("holders %v, want only the peer %s", got, other)
	}
}
