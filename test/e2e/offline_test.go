//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

// TestPullByTagAfterKill9DuringOutage: containerd pulls an image by tag
// through nodecache; nodecache is killed with SIGKILL; the upstream
// registry stops; a new nodecache starts on the same data directory and
// address; containerd, its copy of the image removed, pulls it by tag
// again, which must succeed from nodecache's cache alone: the tag from
// the records on disk, everything else from the store.
//
// It runs once per containerd build: Debian's 1.6 and the pinned 2.x.
func TestPullByTagAfterKill9DuringOutage(t *testing.T) {
	eachContainerd(t, testPullByTagAfterKill9)
}

func testPullByTagAfterKill9(t *testing.T, b containerdBuild) {
	reg := registrytest.Start(t)
	img := reg.PushImage(t, "e2e/offline", "v1", 200_000)
	bin := daemontest.Binary(t)
	addr := daemontest.FreeAddr(t)
	data := filepath.Join(t.TempDir(), "data")
	// --tag-ttl 0: the second pull asks upstream for the tag first, and
	// can only be answered from the record.
	args := []string{"--listen", addr, "--data-dir", data, "--registry", reg.Host() + "=" + reg.URL(),
		"--tag-ttl", "0", "--shutdown-grace", "2s", "--log-level", "debug"}
	first := startKillable(t, bin, args)

	ctrd := startContainerd(t, b)
	hostsDir := writeHostsDir(t, &nodecache{bin: bin, url: "http://" + addr}, reg)
	ref := reg.Host() + "/e2e/offline:v1"
	pull := []string{"--debug", "content", "fetch", "--all-platforms", "--hosts-dir", hostsDir, ref}
	ctrd.mustCtr(t, pull...)
	all := imageDigests(img)
	requireContent(t, ctrd, all)

	waitForTagRecord(t, filepath.Join(data, "tags", "tags.log"), img.Index.Encoded())
	// A fill's commit (fsync, rename) follows the release of its last
	// byte: a kill before it leaves that blob uncached, as documented.
	// The test is of what a kill after the commits keeps.
	for _, d := range all {
		waitForTagRecord(t, filepath.Join(data, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded()), "")
	}
	if err := first.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Stop() // reaps it; a killed process reports an error
	reg.Close()

	startKillable(t, bin, args)
	ctrd.mustCtr(t, "image", "rm", "--sync", ref)
	if left := ctrd.present(t, all); len(left) > 0 {
		t.Fatalf("content still in containerd after image rm --sync: %v", left)
	}
	ctrd.mustCtr(t, pull...)
	requireContent(t, ctrd, all)
	if !t.Failed() {
		fmt.Printf("e2e: %s: pull by tag after kill -9 of nodecache with upstream down: ok\n", b)
	}
}

// startKillable starts nodecache with args (which name its --listen
// address, so that a restart keeps it) and stops it in the cleanup, where
// a daemon killed by the test is no error.
func startKillable(t *testing.T, bin string, args []string) *daemontest.Process {
	t.Helper()
	p, err := daemontest.Start(t.Context(), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- output of nodecache (pid %d) ---\n%s", p.Cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// waitForTagRecord waits until the file at path exists and holds want:
// nodecache writes its tag records within a second, and a store entry once
// its fill is committed. The deadline only bounds a failing test.
func waitForTagRecord(t *testing.T, path, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(want)) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%q never reached %s", want, path)
		case <-time.After(pollInterval):
		}
	}
}
