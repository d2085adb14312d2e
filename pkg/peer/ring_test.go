package peer

import (
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestRingEmptyAndAlone(t *testing.T) {
	d := digest.FromString("x")
	if i := newRing("", nil).owner(keyOf(d)); i != -1 {
		t.Errorf("empty ring owner = %d, want -1", i)
	}
	m, err := NewMembership("10.0.0.1:5051", Sources{}, NewHealth())
	if err != nil {
		t.Fatal(err)
	}
	if addr, self := m.Owner(d); !self || addr != "" {
		t.Errorf("alone: Owner = %q, %v; want \"\", true", addr, self)
	}
}

// TestRingAgreement checks that ownership depends only on the set of
// nodes: every node computes the same owner whichever of them it is and in
// whatever order it learned of the others.
func TestRingAgreement(t *testing.T) {
	nodes := nodeAddrs(50)
	rev := slices.Clone(nodes)
	slices.Reverse(rev)
	a := newRing(nodes[0], nodes[1:])
	b := newRing(nodes[49], rev[1:])
	for _, d := range testDigests(2000) {
		k := keyOf(d)
		if x, y := a.nodes[a.owner(k)], b.nodes[b.owner(k)]; x != y {
			t.Fatalf("%s: node 0 says %s, node 49 says %s", d, x, y)
		}
	}
}

// TestSimulateRebalance is the simulation of a large cluster: 1000 nodes
// and 100,000 keys (fewer under the race detector, which slows the
// arithmetic down tenfold). It logs how many keys move when one node leaves
// and when one joins, and how evenly keys spread, and fails if moves touch
// more than the leaving or joining node's keys.
func TestSimulateRebalance(t *testing.T) {
	const nodes = 1000
	keys := 100000
	if raceEnabled || testing.Short() {
		keys = 20000
	}
	addrs := nodeAddrs(nodes + 1)
	joiner := addrs[nodes]
	addrs = addrs[:nodes]
	hashes := make([]uint64, keys)
	for i := range hashes {
		hashes[i] = keyOf(digest.FromString("key " + strconv.Itoa(i)))
	}
	ownersOf := func(r *ring) []string {
		out := make([]string, len(hashes))
		for i, k := range hashes {
			out[i] = r.nodes[r.owner(k)]
		}
		return out
	}
	full := ownersOf(newRing("", addrs))

	load := make(map[string]int, nodes)
	for _, o := range full {
		load[o]++
	}
	lo, hi, sumsq := keys, 0, 0.0
	mean := float64(keys) / nodes
	for _, a := range addrs {
		n := load[a]
		lo, hi = min(lo, n), max(hi, n)
		sumsq += (float64(n) - mean) * (float64(n) - mean)
	}
	// A perfectly random assignment has a standard deviation of about
	// sqrt(mean); much more would mean the hash is biased.
	sd := math.Sqrt(sumsq / nodes)
	if sd > 1.5*math.Sqrt(mean) {
		t.Errorf("keys per node: standard deviation %.1f, want about sqrt(%.0f) = %.1f", sd, mean, math.Sqrt(mean))
	}

	leaver := addrs[nodes/2]
	without := ownersOf(newRing("", slices.Delete(slices.Clone(addrs), nodes/2, nodes/2+1)))
	leaveMoved := 0
	for i := range full {
		if full[i] != without[i] {
			if full[i] != leaver {
				t.Fatalf("key %d moved from %s, which stayed", i, full[i])
			}
			leaveMoved++
		}
	}
	if leaveMoved != load[leaver] {
		t.Fatalf("%d keys moved, the leaver owned %d", leaveMoved, load[leaver])
	}

	with := ownersOf(newRing("", append(slices.Clone(addrs), joiner)))
	joinMoved := 0
	for i := range full {
		if full[i] != with[i] {
			if with[i] != joiner {
				t.Fatalf("key %d moved to %s, not to the joiner", i, with[i])
			}
			joinMoved++
		}
	}
	// Expected 1/1001 of the keys; allow six standard deviations.
	if exp := float64(keys) / (nodes + 1); math.Abs(float64(joinMoved)-exp) > 6*math.Sqrt(exp) {
		t.Errorf("join moved %d keys, expected about %.0f", joinMoved, exp)
	}
	t.Logf("%d nodes, %d keys: keys per node mean %.0f, min %d, max %d, sd %.1f (random: %.1f)",
		nodes, keys, mean, lo, hi, sd, math.Sqrt(mean))
	t.Logf("one node leaves: %d keys move (%.5f of all; 1/%d = %.5f), all of them the leaver's",
		leaveMoved, float64(leaveMoved)/float64(keys), nodes, 1.0/nodes)
	t.Logf("one node joins: %d keys move (%.5f of all; 1/%d = %.5f), all of them to the joiner",
		joinMoved, float64(joinMoved)/float64(keys), nodes+1, 1.0/(nodes+1))
}

func BenchmarkOwner(b *testing.B) {
	ds := testDigests(1024)
	for _, n := range []int{10, 100, 1000} {
		b.Run("peers="+strconv.Itoa(n), func(b *testing.B) {
			addrs := nodeAddrs(n + 1)
			m, err := NewMembership(addrs[0], Sources{Static: addrs[1:]}, NewHealth())
			if err != nil {
				b.Fatal(err)
			}
			m.health.MarkBad(addrs[1], "so that the health check is not the empty fast path")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m.Owner(ds[i&1023])
				i++
			}
		})
	}
}
