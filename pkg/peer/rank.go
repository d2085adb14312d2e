package peer

import (
	"slices"

	"github.com/opencontainers/go-digest"
)

// OwnerExcept is Owner with the nodes in skip treated as gone: the first
// node in d's rendezvous order that is neither skipped nor marked bad.
// After a source of d fails mid-transfer, every node that was reading
// from it agrees on this one node to continue from, so they fill it once
// instead of each going to upstream. self is true when that node is this
// one (or there is no other).
func (m *Membership) OwnerExcept(d digest.Digest, skip ...string) (addr string, self bool) {
	r := m.ring.Load()
	for _, i := range r.ranked(keyOf(d)) {
		n := r.nodes[i]
		if i == r.self {
			return "", true
		}
		if slices.Contains(skip, n) || (m.health != nil && m.health.IsBad(n)) {
			continue
		}
		return n, false
	}
	return "", true
}

// After returns up to n live peers that follow this node in d's
// rendezvous order: the nodes that owned d before this node did, when a
// node joined, and so the first places to look for it.
func (m *Membership) After(d digest.Digest, n int) []string {
	r := m.ring.Load()
	var out []string
	seen := r.self < 0
	for _, i := range r.ranked(keyOf(d)) {
		switch {
		case i == r.self:
			seen = true
		case seen && len(out) < n && (m.health == nil || !m.health.IsBad(r.nodes[i])):
			out = append(out, r.nodes[i])
		}
	}
	return out
}
