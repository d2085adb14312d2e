package peer

import (
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// DefaultFanout is how many peers a node streams one blob to at once
	// (--peer-fanout). A node's network card is typically five or more
	// times its share of the registry's bandwidth (10 Gbit/s against
	// 2 Gbit/s); four streams then each still run at least at the speed
	// the blob arrives from upstream, so a relay never slows the stream
	// it passes on, even with one stream more (a late asker or a
	// continuation), and the tree of receivers is log4(K) deep: 5 levels
	// for a thousand nodes.
	DefaultFanout = 4

	// maxHoldersPerDigest bounds the holders remembered for one digest:
	// more than a few fan-outs' worth spreads no further load.
	maxHoldersPerDigest = 16

	// maxFanoutDigests bounds the digests with holders remembered. Holder
	// knowledge is soft: losing it costs redirects to fewer nodes, never
	// correctness. 16384 digests of at most 16 addresses is a few MiB.
	maxFanoutDigests = 16384
)

// Fanout bounds the streams of one blob that this node sends to peers at
// once, and remembers, as soft state, which nodes are receiving each blob
// from it now and which received all of it (holders). An ask beyond the
// bound is pointed to one of those nodes, round robin, which serves it
// from its store or its own fill in progress. It is safe for concurrent
// use.
//
// Fanout is a prometheus.Collector of nodecache_peer_streams and
// nodecache_peer_redirects_total.
type Fanout struct {
	limit     int
	mu        sync.Mutex
	fans      map[digest.Digest]*fan
	active    int             // streams now, all digests
	redirects uint64          // asks pointed elsewhere, ever
	notify    chan<- struct{} // told of every change; nil: nobody
}

var (
	streamsDesc = prometheus.NewDesc("nodecache_peer_streams",
		"Blob streams this node sends to peers now (at most --peer-fanout per blob).", nil, nil)
	redirectsDesc = prometheus.NewDesc("nodecache_peer_redirects_total",
		"Peer asks pointed to another node, past the fan-out bound.", nil, nil)
)

// fan is what Fanout knows of one digest.
type fan struct {
	streams   int
	receiving map[string]int // node → streams to it now
	holders   []string       // most recent last
	next      int            // round-robin position
}

// NewFanout returns a Fanout of at most limit streams per blob; zero or
// less means DefaultFanout.
func NewFanout(limit int) *Fanout {
	if limit <= 0 {
		limit = DefaultFanout
	}
	return &Fanout{limit: limit, fans: make(map[digest.Digest]*fan)}
}

// Limit returns the fan-out bound.
func (f *Fanout) Limit() int { return f.limit }

// Admit decides an ask for d: release is non-nil if this node serves it
// (call it when the stream ends, with whether all of it was sent), and to
// names the node to point the asker to otherwise. An ask at MaxHops is
// always served, as is one when no other node is known.
func (f *Fanout) Admit(d digest.Digest, a Ask) (release func(complete bool), to string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn := f.fans[d]
	if fn == nil {
		f.evictLocked()
		fn = &fan{receiving: make(map[string]int)}
		f.fans[d] = fn
	}
	if fn.streams >= f.limit && a.Hop < MaxHops {
		if to = fn.pickLocked(a); to != "" {
			f.redirects++
			return nil, to
		}
	}
	fn.streams++
	f.active++
	f.changedLocked()
	if a.From != "" {
		fn.receiving[a.From]++
	}
	var once sync.Once
	return func(complete bool) { once.Do(func() { f.release(d, fn, a.From, complete) }) }, ""
}

func (f *Fanout) release(d digest.Digest, fn *fan, from string, complete bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn.streams--
	f.active--
	f.changedLocked()
	if from != "" {
		if fn.receiving[from]--; fn.receiving[from] <= 0 {
			delete(fn.receiving, from)
		}
		if complete {
			fn.holders = slices.DeleteFunc(fn.holders, func(h string) bool { return h == from })
			if len(fn.holders) >= maxHoldersPerDigest {
				fn.holders = fn.holders[1:]
			}
			fn.holders = append(fn.holders, from)
		}
	}
	if fn.streams == 0 && len(fn.holders) == 0 && f.fans[d] == fn {
		delete(f.fans, d)
	}
}

// pickLocked returns the next node, round robin over those receiving d
// now and its holders, other than the asker and a node that failed. A
// continuation is pointed to holders only: a node still receiving d
// would not serve it (see ModeRelay).
func (fn *fan) pickLocked(a Ask) string {
	cands := make([]string, 0, len(fn.receiving)+len(fn.holders))
	if !a.Continue {
		for n := range fn.receiving {
			cands = append(cands, n)
		}
		slices.Sort(cands) // map order is random; the rotation should not be
	}
	for _, h := range fn.holders {
		if fn.receiving[h] == 0 {
			cands = append(cands, h)
		}
	}
	cands = slices.DeleteFunc(cands, func(n string) bool { return n == a.From || n == a.Failed })
	if len(cands) == 0 {
		return ""
	}
	fn.next++
	return cands[fn.next%len(cands)]
}

// evictLocked drops one digest nobody is streaming when the map is full.
// Which one does not matter: the knowledge is soft.
func (f *Fanout) evictLocked() {
	if len(f.fans) < maxFanoutDigests {
		return
	}
	for d, fn := range f.fans {
		if fn.streams == 0 {
			delete(f.fans, d)
			return
		}
	}
}

// Active returns the number of streams to peers now, over all digests.
func (f *Fanout) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

// Describe implements prometheus.Collector.
func (f *Fanout) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsDesc
	ch <- redirectsDesc
}

// Collect implements prometheus.Collector.
func (f *Fanout) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	active, redirects := f.active, f.redirects
	f.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(streamsDesc, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(redirectsDesc, prometheus.CounterValue, float64(redirects))
}

// Streams returns the number of streams of d to peers now.
func (f *Fanout) Streams(d digest.Digest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fn := f.fans[d]; fn != nil {
		return fn.streams
	}
	return 0
}

// Notify sends on ch, without blocking, after every change of Active.
// Tests wait on it instead of polling.
func (f *Fanout) Notify(ch chan<- struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify = ch
}

func (f *Fanout) changedLocked() {
	if f.notify == nil {
		return
	}
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// Holders returns the nodes known to hold d, most recent first.
func (f *Fanout) Holders(d digest.Digest) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn := f.fans[d]
	if fn == nil {
		return nil
	}
	out := slices.Clone(fn.holders)
	slices.Reverse(out)
	return out
}

// Forget drops node from every digest's holders, for a node marked bad
// or gone.
func (f *Fanout) Forget(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fn := range f.fans {
		fn.holders = slices.DeleteFunc(fn.holders, func(h string) bool { return h == node })
	}
}
