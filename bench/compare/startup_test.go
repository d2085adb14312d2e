//go:build benchcompare

package compare

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startup: bin/nodecache on a store of startupEntries entries left by a
// clean stop: from exec until /readyz answers 200 (from then on every
// stored entry is served), and its RSS then; and until the index holds
// every entry (nodecache_store_loading is 0), and its RSS then.
func (s *setup) startup(t *testing.T) []*measure {
	dir := filepath.Join(s.work, "startup")
	if err := makeStore(dir, startupEntries); err != nil {
		t.Fatal(err)
	}
	ready := newMeasure("start-up with 200,000 entries: exec to ready", "s", false)
	rss := newMeasure("start-up with 200,000 entries: RSS after ready", "MiB", false)
	loaded := newMeasure("start-up with 200,000 entries: exec to the index loaded", "s", false)
	loadedRSS := newMeasure("start-up with 200,000 entries: RSS once loaded", "MiB", false)
	c := &contender{name: "nodecache", role: roleSelf}
	for range reps {
		addr, metrics := freeAddr(t, nodecacheIP), freeAddr(t, nodecacheIP)
		start := time.Now()
		p, err := startProc("nodecache", filepath.Join(s.work, "startup.log"), s.nodecacheArgs(addr, metrics, dir)...)
		if err != nil {
			t.Fatal(err)
		}
		err = p.waitHTTP("http://" + metrics + "/readyz")
		tookReady := time.Since(start)
		var kbReady, kbLoaded int64
		if err == nil {
			kbReady, err = vmRSS(p.cmd.Process.Pid)
		}
		if err == nil {
			err = p.waitMetric("http://"+metrics+"/metrics", "nodecache_store_loading 0")
		}
		tookLoaded := time.Since(start)
		if err == nil {
			kbLoaded, err = vmRSS(p.cmd.Process.Pid)
		}
		p.stop()
		if err != nil {
			t.Fatal(err)
		}
		ready.add(c, tookReady.Seconds())
		rss.add(c, float64(kbReady)/1024)
		loaded.add(c, tookLoaded.Seconds())
		loadedRSS.add(c, float64(kbLoaded)/1024)
	}
	return []*measure{ready, rss, loaded, loadedRSS}
}

// makeStore writes n small entries into a store directory, as a daemon
// leaves them after a clean stop (its clean mark included), unless a
// previous run left exactly that.
func makeStore(dir string, n int) error {
	done := dir + ".entries" // outside the store, which owns its directory
	want := strconv.Itoa(n) + " entries, clean mark with bytes"
	if b, err := os.ReadFile(done); err == nil && string(b) == want {
		return nil
	}
	if err := fresh(dir); err != nil {
		return err
	}
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return err
		}
	}
	var bytes int64
	for i := range n {
		body := fmt.Appendf(nil, "nodecache bench-compare entry %d\n", i)
		bytes += int64(len(body))
		sum := sha256.Sum256(body)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h[:2], h), body, 0o644); err != nil {
			return err
		}
	}
	// The clean mark as Close leaves it, with the bytes stored: the
	// daemon then serves while it loads the index.
	if err := os.WriteFile(filepath.Join(dir, "clean"), fmt.Appendf(nil, "%d\n", bytes), 0o644); err != nil {
		return err
	}
	return os.WriteFile(done, []byte(want), 0o644)
}

// vmRSS is the VmRSS of pid in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
