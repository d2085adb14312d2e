package diskstore

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// A load runs with GOGC at loadGCPercent, unless it was lower, and puts
// it back when it ends.
func TestLoadLowersGC(t *testing.T) {
	orig := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	for _, set := range []int{100, loadGCPercent + 1, loadGCPercent - 5, -1} {
		debug.SetGCPercent(set)
		want := min(set, loadGCPercent)
		if set < 0 {
			want = -1
		}
		dir := t.TempDir()
		storedEntries(t, dir, 3, 100) // leaves a clean mark: the next Open loads in the background
		g := newLoadGates(loadScanned)
		s := openHeld(t, dir, g)
		g.at(loadScanned)
		if got := gcPercent(); got != want {
			t.Errorf("GOGC %d: %d during the background load, want %d", set, got, want)
		}
		g.release(loadScanned)
		<-s.loader.exited
		if got := gcPercent(); got != set {
			t.Errorf("GOGC %d: %d after the background load", set, got)
		}
		s.Close()
		// Without the clean mark (a crash), Open loads before it returns.
		if err := os.Remove(filepath.Join(dir, cleanName)); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, dir)
		if got := gcPercent(); got != set {
			t.Errorf("GOGC %d: %d after a load in Open", set, got)
		}
		s.Close()
	}
}
