package mirror

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/peer"
	"nodecache/pkg/upstream"
)

// A scale cluster: K nodes in one process, each with its own store, peer
// listener on 127.0.0.1 and client server, and a peer egress that is
// counted and can be held: every peer response passes its first hold
// bytes, then waits for the gate. Holding makes every transfer of a
// rollout run at once, so the fan-out bound decides where each goes, and
// the tests assert counts, never times.

// scaleNode is one node of a scale cluster. Its mirror and peer handler
// can be rebuilt on the same store and listener (a membership change).
type scaleNode struct {
	addr    string
	l       net.Listener
	store   *diskstore.Store
	health  *peer.Health
	members *peer.Membership
	client  *peer.Client
	fanout  *peer.Fanout
	m       atomic.Pointer[Server]
	h       atomic.Pointer[http.Handler]
	peerSrv *httptest.Server
	srv     *httptest.Server
	sent    atomic.Int64 // peer egress, bytes
	up      *registrytest.Registry
}

// egressGate holds peer egress until released.
type egressGate struct {
	ch   chan struct{}
	once sync.Once
}

func (g *egressGate) release() { g.once.Do(func() { close(g.ch) }) }

type scaleCluster struct {
	t      *testing.T
	up     *registrytest.Registry
	secret string
	fan    int
	opts   []Option
	nodes  []*scaleNode
	notify chan struct{} // a stream began or ended somewhere
	hold   atomic.Int64  // bytes each peer response passes before the gate
	gate   atomic.Pointer[egressGate]
	pace   atomic.Int64 // if set, a pause after every peer write (ns)
}

// newScaleCluster starts k nodes with fan-out f that all know each other,
// their egress not held.
func newScaleCluster(t *testing.T, up *registrytest.Registry, k, f int, opts ...Option) *scaleCluster {
	t.Helper()
	c := &scaleCluster{t: t, up: up, secret: writeSecret(t, testPeerSecret), fan: f, opts: opts,
		notify: make(chan struct{}, 1)}
	c.holdAt(0)
	for range k {
		c.nodes = append(c.nodes, c.newNode())
	}
	for _, n := range c.nodes {
		c.build(n, c.addrs(), nil)
	}
	return c
}

func (c *scaleCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr)
	}
	return out
}

// newNode opens a node's listener and store and starts its servers; build
// gives it a mirror.
func (c *scaleCluster) newNode() *scaleNode {
	t := c.t
	n := &scaleNode{l: listenLocal(t), up: c.up}
	n.addr = n.l.Addr().String()
	var err error
	if n.store, err = diskstore.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	n.peerSrv = serveOn(t, n.l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*n.h.Load()).ServeHTTP(&egressWriter{ResponseWriter: w, n: n, c: c, ctx: r.Context()}, r)
	}))
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.m.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

// build gives n a mirror and peer handler that know members, with extra
// options.
func (c *scaleCluster) build(n *scaleNode, members []string, extra []Option) {
	t := c.t
	var err error
	n.health = peer.NewHealth()
	if n.members, err = peer.NewMembership(n.addr, peer.Sources{Static: members}, n.health); err != nil {
		t.Fatal(err)
	}
	secret, err := peer.LoadSecret(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	n.client = peer.NewClient(secret, n.health)
	n.fanout = peer.NewFanout(c.fan)
	n.fanout.Notify(c.notify)
	upClient, err := upstream.New(map[string]string{c.up.Host(): c.up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]Option{WithAllowList([]string{c.up.Host()}), WithDefaultRegistry(c.up.Host()),
		WithPeers(Peers{Members: n.members, Client: n.client, Fanout: n.fanout})}, c.opts...)
	// NODECACHE_SCALE_LOG=1 logs every node to stderr, to follow a rollout.
	if os.Getenv("NODECACHE_SCALE_LOG") != "" {
		opts = append(opts, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.addr)))
	}
	m := New(n.store, upClient, append(opts, extra...)...)
	t.Cleanup(m.Close)
	var h http.Handler = peer.NewHandler(secret, m.Allowed, m)
	n.m.Store(m)
	n.h.Store(&h)
}

// holdAt makes every peer response from now on pass n bytes and wait for
// a new gate (0: pass everything).
func (c *scaleCluster) holdAt(n int64) *egressGate {
	g := &egressGate{ch: make(chan struct{})}
	if n == 0 {
		g.release()
	}
	c.gate.Store(g)
	c.hold.Store(n)
	return g
}

// waitStreams waits until the nodes stream d to want peers at once in
// all. The deadline only bounds a failing test.
func (c *scaleCluster) waitStreams(d digest.Digest, want int) {
	c.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		got := 0
		for _, n := range c.nodes {
			got += n.fanout.Streams(d)
		}
		if got >= want {
			return
		}
		select {
		case <-c.notify:
		case <-deadline:
			c.t.Fatalf("%d streams of %s at once, want %d", got, d, want)
		}
	}
}

// pullEvery has every node in nodes GET every blob at once and returns the
// errors.
func pullEvery(nodes []*scaleNode, repo string, blobs []digest.Digest) <-chan error {
	errs := make(chan error, len(nodes)*len(blobs))
	var wg sync.WaitGroup
	for _, n := range nodes {
		for _, d := range blobs {
			wg.Go(func() {
				if err := n.get(repo, d); err != nil {
					errs <- err
				}
			})
		}
	}
	go func() { wg.Wait(); close(errs) }()
	return errs
}

func (n *scaleNode) get(repo string, d digest.Digest) error {
	p := &peerNode{addr: n.addr, srv: n.srv, up: n.up}
	return p.getBlob(repo, d, "", "")
}

// kill cuts the node's peer API off for good, as a node that dies does.
func (n *scaleNode) kill() {
	n.peerSrv.CloseClientConnections()
	n.peerSrv.Listener.Close()
}

// egressWriter counts a node's peer egress and holds it at the gate.
type egressWriter struct {
	http.ResponseWriter
	n    *scaleNode
	c    *scaleCluster
	ctx  context.Context
	sent int64
}

func (w *egressWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p
		if hold := w.c.hold.Load(); hold > 0 && w.sent+int64(len(p)) > hold {
			if w.sent < hold {
				chunk = p[:hold-w.sent]
			} else if err := w.wait(); err != nil {
				return total, err
			}
		}
		n, err := w.ResponseWriter.Write(chunk)
		w.sent += int64(n)
		w.n.sent.Add(int64(n))
		total += n
		if err != nil {
			return total, err
		}
		p = p[n:]
		if pace := w.c.pace.Load(); pace > 0 {
			time.Sleep(time.Duration(pace)) // emulates a slow link, not synchronisation
		}
	}
	return total, nil
}

// wait flushes what was sent and waits for the gate, or the request's end.
func (w *egressWriter) wait() error {
	http.NewResponseController(w.ResponseWriter).Flush()
	select {
	case <-w.c.gate.Load().ch:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

func (w *egressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
