//go:build race

package daemon

// raceEnabled: the race detector allocates on its own and makes
// sync.Pool drop items, so allocation counts are checked without it.
const raceEnabled = true
