package cluster

import (
	"math"
	"testing"
	"time"

	"nodecache/pkg/peer"
)

// The model of a rollout with bounded fan-out (docs/peers.md). Every node
// sends one blob to at most F peers, so each stream gets at least N/F of
// its sender's card, and a relay passes bytes on as its fill takes them
// in. Every node then receives at r = min(U, N/F), and the last one, at
// depth D = ceil(log_F K) of the tree, lags the first by about D fill
// chunks:
//
//	T(K) = S/r + D·c/r
//
// with S the layer, U a node's share of the registry, N its card and c
// the chunk a relay passes on at once (the fill's 256 KiB copy buffer).
// Without the bound, one owner sent every copy: max(S/U, (K−1)·S/N).

// modelChunk is the fill's copy buffer, the unit a relay passes on.
const modelChunk = 256 << 10

// modelTime is T(K) for a layer of s bytes, rates in bytes a second.
func modelTime(k int, f int, s, u, n float64) time.Duration {
	r := math.Min(u, n/float64(f))
	depth := 0.0
	if k > 1 {
		depth = math.Ceil(math.Log(float64(k)) / math.Log(float64(f)))
	}
	return time.Duration((s/r + depth*modelChunk/r) * float64(time.Second))
}

// ownerOnlyTime is the time before the bound: one owner sends K−1 copies.
func ownerOnlyTime(k int, s, u, n float64) time.Duration {
	return time.Duration(math.Max(s/u, float64(k-1)*s/n) * float64(time.Second))
}

// logModel prints the model for the bench's rates and for the issue's
// cluster: a 5 GiB layer, 2 Gbit/s to the registry and 10 Gbit/s cards.
func logModel(b *testing.B, benchU, benchN float64) {
	const gib = 1 << 30
	f := peer.DefaultFanout
	s, u, n := 5.0*gib, 2e9/8, 10e9/8
	single := modelTime(1, f, s, u, n)
	b.Logf("model, 5 GiB layer, 2 Gbit/s registry share, 10 Gbit/s card, F=%d: a single pull %s", f, single.Round(100*time.Millisecond))
	for _, k := range []int{32, 100, 1000} {
		t := modelTime(k, f, s, u, n)
		b.Logf("  K=%4d: %s (%.3f× a single pull); one owner sending every copy: %s",
			k, t.Round(100*time.Millisecond), float64(t)/float64(single), ownerOnlyTime(k, s, u, n).Round(time.Second))
	}
	b.Logf("model at this bench's rates, 256 MiB: K=32 %.3f× K=1", float64(modelTime(32, f, 256<<20, benchU, benchN))/float64(modelTime(1, f, 256<<20, benchU, benchN)))
}
