package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

const (
	// DefaultDNSInterval is how often --peer-dns is resolved again. A
	// DaemonSet pod that starts is asked for its keys within 30 s, and a
	// thousand nodes cost the cluster DNS about 33 queries a second.
	// Between two resolutions a node that left costs each asking node one
	// failed connect (DefaultDialTimeout) before Health skips it.
	DefaultDNSInterval = 30 * time.Second

	// dnsTimeout bounds one lookup, so a hung DNS server delays the next
	// attempt rather than stopping re-resolution for good.
	dnsTimeout = 5 * time.Second

	// maxPeerFileSize bounds what is read from --peer-file. A line per
	// node of a large cluster is well under a megabyte; anything bigger is
	// the wrong file.
	maxPeerFileSize = 1 << 20

	// maxLoggedAddrs bounds the addresses listed in one change log line, so
	// a thousand-node start logs a line, not a page.
	maxLoggedAddrs = 16
)

// Source names, used in logs.
const (
	sourceStatic = "static"
	sourceDNS    = "dns"
	sourceFile   = "file"
)

// ErrNoAdvertise is returned by NewMembership when peers are configured but
// this node's own address is not: without it the node cannot tell which
// keys are its own, and the others could not agree with it about owners.
var ErrNoAdvertise = errors.New("peer: --advertise is required when peers are configured")

// Sources says where Membership finds peers. The peer set is the union of
// all of them, without this node.
type Sources struct {
	Static []string // --peers: host:port of each peer
	DNS    string   // --peer-dns: name:port; every address of name is a peer on port
	File   string   // --peer-file: one host:port per line, '#' comments
}

// Membership is the current set of peers and the ownership of digests
// among them and this node. Owner takes no lock: every change builds a new
// immutable ring and swaps it in.
//
// Membership is a prometheus.Collector of nodecache_peers and
// nodecache_peer_membership_changes_total.
type Membership struct {
	self    string
	health  *Health
	static  []string
	file    string
	dnsName string
	dnsPort string
	o       options

	ring      atomic.Pointer[ring]
	changes   prometheus.Counter
	peersDesc *prometheus.Desc

	// mu guards sets and failing, and orders the stores to ring so that
	// concurrent sources never overwrite each other's update.
	mu      sync.Mutex
	sets    map[string][]string // last good set per source
	failing map[string]string   // per failing source, the error last logged
}

// NewMembership returns the membership of this node, which advertises
// itself to its peers as advertise (host:port of its peer listener, "" to
// take no keys, which is allowed only without peers). It reads src.Static
// and src.File at once, and fails if either is malformed or the file
// cannot be read; src.DNS is first resolved by Run. Health decides which
// peers Owner skips. Its options are WithLogger, WithResolver and
// WithDNSInterval.
func NewMembership(advertise string, src Sources, health *Health, opts ...MembershipOption) (*Membership, error) {
	m := &Membership{
		health:  health,
		file:    src.File,
		o:       membershipOptions(opts),
		sets:    make(map[string][]string),
		failing: make(map[string]string),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_peer_membership_changes_total",
			Help: "Changes of the peer set (any number of peers added or removed at once).",
		}),
		peersDesc: prometheus.NewDesc("nodecache_peers",
			"Peers known to this node, by whether they are skipped after a failure.", []string{"state"}, nil),
	}
	if advertise != "" {
		a, err := NormalizeAddr(advertise)
		if err != nil {
			return nil, fmt.Errorf("--advertise: %w", err)
		}
		m.self = a
	}
	if m.self == "" && (len(src.Static) > 0 || src.DNS != "" || src.File != "") {
		return nil, ErrNoAdvertise
	}
	for _, s := range src.Static {
		a, err := NormalizeAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--peers: %w", err)
		}
		m.static = append(m.static, a)
	}
	if src.DNS != "" {
		var err error
		if m.dnsName, m.dnsPort, err = parseNamePort(src.DNS); err != nil {
			return nil, fmt.Errorf("--peer-dns: %w", err)
		}
	}
	m.sets[sourceStatic] = m.static
	if m.file != "" {
		set, err := readPeerFile(m.file)
		if err != nil {
			return nil, fmt.Errorf("--peer-file: %w", err)
		}
		m.sets[sourceFile] = set
	}
	r := newRing(m.self, m.unionLocked())
	m.ring.Store(r)
	m.o.log.Info("peers", slog.String("self", m.self), slog.Int("peers", len(r.nodes)-btoi(r.self >= 0)),
		slog.Any("addrs", firstAddrs(r.peers())))
	return m, nil
}

// Run keeps the peer set current: it resolves src.DNS every DNS interval
// (WithDNSInterval) and reloads src.File after every burst of changes
// (within dirwatch.DefaultDebounce), until ctx ends.
// It returns nil when ctx ends, or an error if the file cannot be watched.
func (m *Membership) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if m.file != "" {
		g.Go(func() error { return watchFile(ctx, m.o.log, m.file, m.reloadFile) })
	}
	if m.dnsName != "" {
		g.Go(func() error { m.runDNS(ctx); return nil })
	}
	return g.Wait()
}

// Owner returns the peer to fetch d from. self is true when this node
// should fill d from upstream itself: it owns d, it has no peers, or d's
// owner is marked bad (the node then goes to upstream rather than to a
// second peer, so a failure costs one attempt and no chain of them). addr
// is "" when self is true.
func (m *Membership) Owner(d digest.Digest) (addr string, self bool) {
	r := m.ring.Load()
	i := r.owner(keyOf(d))
	if i < 0 || i == r.self {
		return "", true
	}
	if m.health != nil && m.health.IsBad(r.nodes[i]) {
		return "", true
	}
	return r.nodes[i], false
}

// Peers returns the current peers, sorted, without this node.
func (m *Membership) Peers() []string { return m.ring.Load().peers() }

// IsPeer reports whether addr, normalised, is one of the current peers
// (not this node). Only a peer may be pointed to or asked: a redirect to
// any other address is not followed, so no answer can make this node send
// a signed request, or fetch a blob, anywhere outside the peer set.
func (m *Membership) IsPeer(addr string) bool {
	return addr != m.self && m.ring.Load().has(addr)
}

// Self returns this node's normalised advertised address.
func (m *Membership) Self() string { return m.self }

// reloadFile reads the peer file again. A file that cannot be read or has
// a bad line leaves the last good set in place.
func (m *Membership) reloadFile() {
	set, err := readPeerFile(m.file)
	m.update(sourceFile, set, err)
}

func readPeerFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPeerFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxPeerFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPeerFileSize)
	}
	return parsePeerFile(path, data)
}

func (m *Membership) runDNS(ctx context.Context) {
	m.resolve(ctx)
	t := time.NewTicker(m.o.dnsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.resolve(ctx)
		}
	}
}

// resolve looks up --peer-dns once. A failed lookup, or one that returns
// no address, leaves the last good set in place: a DNS outage must not
// empty the peer set of every node at once (which would send every node
// to upstream for everything), while a stale set costs at most a failed
// connect per departed peer.
func (m *Membership) resolve(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	hosts, err := m.o.resolver(lctx, m.dnsName)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not a DNS failure
	}
	var set []string
	for _, h := range hosts {
		a, aerr := NormalizeAddr(net.JoinHostPort(h, m.dnsPort))
		if aerr != nil {
			err = errors.Join(err, aerr)
			continue
		}
		set = append(set, a)
	}
	if err == nil && len(set) == 0 {
		err = fmt.Errorf("%s has no addresses", m.dnsName)
	}
	if err != nil {
		set = nil
		err = fmt.Errorf("resolving %s: %w", m.dnsName, err)
	}
	m.update(sourceDNS, set, err)
}

// update records the result of reloading one source. On an error the
// source's last good set stays; the error is logged once per failure
// streak for DNS (its messages vary with ports and servers) and once per
// distinct message for the file (a new bad line deserves a new line).
func (m *Membership) update(source string, set []string, err error) {
	defer m.o.onReload(source, err)
	m.mu.Lock()
	if err != nil {
		prev, was := m.failing[source]
		m.failing[source] = err.Error()
		m.mu.Unlock()
		if !was || (source != sourceDNS && prev != err.Error()) {
			m.o.log.Error("peer source failed; keeping the last good peer set",
				slog.String("source", source), slog.Any("error", err))
		}
		return
	}
	_, recovered := m.failing[source]
	delete(m.failing, source)
	m.sets[source] = set
	old := m.ring.Load()
	r := newRing(m.self, m.unionLocked())
	added, removed := diff(old.peers(), r.peers())
	changed := len(added)+len(removed) > 0
	if changed {
		m.ring.Store(r)
		m.changes.Inc()
	}
	m.mu.Unlock()
	if recovered {
		m.o.log.Info("peer source recovered", slog.String("source", source))
	}
	if changed {
		m.o.log.Info("peers changed", slog.String("source", source),
			slog.Int("added", len(added)), slog.Int("removed", len(removed)), slog.Int("peers", len(r.nodes)-btoi(r.self >= 0)),
			slog.Any("added_addrs", firstAddrs(added)), slog.Any("removed_addrs", firstAddrs(removed)))
	}
}

// unionLocked returns the peers of all sources, without this node.
func (m *Membership) unionLocked() []string {
	var all []string
	for _, s := range m.sets {
		all = append(all, s...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	return slices.DeleteFunc(all, func(a string) bool { return a == m.self })
}

// diff returns what b has that a lacks, and the reverse. Both are sorted.
func diff(a, b []string) (added, removed []string) {
	for _, x := range b {
		if _, ok := slices.BinarySearch(a, x); !ok {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func firstAddrs(a []string) []string {
	if len(a) > maxLoggedAddrs {
		return append(a[:maxLoggedAddrs:maxLoggedAddrs], fmt.Sprintf("and %d more", len(a)-maxLoggedAddrs))
	}
	return a
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Describe implements prometheus.Collector.
func (m *Membership) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.peersDesc
	m.changes.Describe(ch)
}

// Collect implements prometheus.Collector. Peer states are counted at
// scrape time, so a mark that expired shows as healthy without any timer.
func (m *Membership) Collect(ch chan<- prometheus.Metric) {
	var healthy, bad int
	for _, p := range m.Peers() {
		if m.health != nil && m.health.IsBad(p) {
			bad++
		} else {
			healthy++
		}
	}
	ch <- prometheus.MustNewConstMetric(m.peersDesc, prometheus.GaugeValue, float64(healthy), "healthy")
	ch <- prometheus.MustNewConstMetric(m.peersDesc, prometheus.GaugeValue, float64(bad), "bad")
	m.changes.Collect(ch)
}
