package diskstore

import (
	"runtime/debug"
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
		loadGC.prev = debug.SetGCPercent(loadGCPercent)
		if loadGC.prev < loadGCPercent { // lower already, or off (-1)
			debug.SetGCPercent(loadGC.prev)
		}
	}
	loadGC.loads++
	return sync.OnceFunc(func() {
		loadGC.Lock()
		defer loadGC.Unlock()
		if loadGC.loads--; loadGC.loads == 0 {
			debug.SetGCPercent(loadGC.prev)
		}
	})
}
