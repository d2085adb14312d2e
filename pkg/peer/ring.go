package peer

import (
	"slices"

	"github.com/opencontainers/go-digest"
)

// Rendezvous (highest-random-weight) hashing: every node scores every key,
// and the node with the highest score owns it. When a node leaves, only
// the keys it owned move (each to its runner-up); when one joins, it takes
// only the keys it now scores highest on. No virtual nodes or token tables
// are needed, and the cost is one multiply-xor mix per node per lookup.
//
// It is written here rather than taken from github.com/dgryski/go-rendezvous
// because every node must compute the same owner whatever library version
// it was built with, so the hash is part of this package's contract and is
// fixed below; that library takes the hash as a caller-supplied function
// and rebuilds its tables in place on Add and Remove, where this package
// wants immutable snapshots it can swap atomically.

// ring is an immutable snapshot of the nodes that own keys: the peers and,
// if it advertises itself, this node. It is never modified after newRing,
// so lookups need no lock.
type ring struct {
	nodes []string // sorted, normalised host:port
	seeds []uint64 // seeds[i] is the hash of nodes[i]
	self  int      // index of this node in nodes, or -1
}

// newRing builds a ring of peers plus self (if self is not "").
func newRing(self string, peers []string) *ring {
	nodes := slices.Clone(peers)
	if self != "" {
		nodes = append(nodes, self)
	}
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	r := &ring{nodes: nodes, seeds: make([]uint64, len(nodes)), self: -1}
	for i, n := range nodes {
		r.seeds[i] = hashString(n)
		if n == self {
			r.self = i
		}
	}
	return r
}

// owner returns the index of the node that owns key, or -1 for an empty
// ring. Ties (astronomically rare) go to the node that sorts first, so
// every node breaks them the same way.
func (r *ring) owner(key uint64) int {
	best, bestScore := -1, uint64(0)
	for i, s := range r.seeds {
		if score := mix64(s ^ key); best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// peers returns the nodes other than self.
func (r *ring) peers() []string {
	out := make([]string, 0, len(r.nodes))
	for i, n := range r.nodes {
		if i != r.self {
			out = append(out, n)
		}
	}
	return out
}

// has reports whether addr, normalised, is one of r's nodes.
func (r *ring) has(addr string) bool {
	_, ok := slices.BinarySearch(r.nodes, addr)
	return ok
}

// keyOf hashes a digest for the ring. The whole string is hashed, not just
// its hex: the algorithm prefix is part of the identity.
func keyOf(d digest.Digest) uint64 { return hashString(string(d)) }

// hashString is 64-bit FNV-1a followed by mix64. FNV-1a alone has weak
// high bits for short, similar inputs such as "10.0.0.1:5051" and
// "10.0.0.2:5051"; the finaliser spreads every input bit over the word.
func hashString(s string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return mix64(h)
}

// mix64 is the 64-bit finaliser of MurmurHash3: a bijection in which every
// input bit affects every output bit with probability about one half.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ranked returns the indexes of the nodes in the order they would own key:
// the owner first, then its runner-up, and so on.
func (r *ring) ranked(key uint64) []int {
	idx := make([]int, len(r.seeds))
	scores := make([]uint64, len(r.seeds))
	for i, s := range r.seeds {
		idx[i], scores[i] = i, mix64(s^key)
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return a - b // the same tie-break as owner
	})
	return idx
}
