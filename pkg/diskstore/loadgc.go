package diskstore

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// loadGCPercent is the garbage collector's target (GOGC) while an index
// loads. The load builds the index in one burst, about 130 MB of it at a
// million entries, and at the default GOGC of 100 the heap was let grow
// to twice what was live: the daemon peaked at 277-320 MiB, above the
// DaemonSet's 256 MiB memory limit, for an index that keeps about 180
// MiB once loaded. At 25 the peak was 236 MiB, for more collection work
// in a load that mostly runs in the background (docs/benchmarks.md). An
// operator's GOGC lower than this, or off, is left alone.
const loadGCPercent = 25

// loadGC counts the loads running in the process (tests open many
// stores), so that the first lowers GOGC and the last restores it.
var loadGC struct {
	sync.Mutex
	loads int
	prev  int // GOGC before the first load
}

// lowerGCForLoad lowers GOGC to loadGCPercent for a load, and returns
// the function that ends that load's share of it; call it once.
func lowerGCForLoad() (end func()) {
	loadGC.Lock()
	defer loadGC.Unlock()
	if loadGC.loads == 0 {
		loadGC.prev = gcPercent()
		if loadGC.prev > loadGCPercent { // neither lower already nor off (-1)
			debug.SetGCPercent(loadGCPercent)
		}
	}
	loadGC.loads++
	return sync.OnceFunc(func() {
		loadGC.Lock()
		defer loadGC.Unlock()
		if loadGC.loads--; loadGC.loads == 0 && loadGC.prev > loadGCPercent {
			debug.SetGCPercent(loadGC.prev)
		}
	})
}

// gcPercent reads GOGC without setting it (debug.SetGCPercent would, and
// setting it starts a collection when it was off); -1 is off.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(int64(s[0].Value.Uint64()))
}
