//go:build e2e

package e2e

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"

	"nodecache/internal/registrytest"
)

// TestBoundedStoreKeepsTheNewestImage is the bounded store as a user meets
// it: with --max-size 100MiB, pull 300 MiB of images through nodecache.
// The data directory never holds more than 100 MiB, and the most recently
// pulled image still pulls with the upstream down.
//
// Debian's containerd is enough: the bound is nodecache's, whatever the client.
func TestBoundedStoreKeepsTheNewestImage(t *testing.T) {
	build := containerdBuilds(t)[0]
	const maxSize = 100 << 20
	reg := registrytest.Start(t)
	var imgs []registrytest.Image
	for i := range 5 {
		imgs = append(imgs, reg.PushSingleImage(t, fmt.Sprintf("e2e/big%d", i), "v1", 60<<20))
	}
	nc := startNodecache(t, reg, "--max-size", "100MiB")
	ctrd := startContainerd(t, build)
	hostsDir := writeHostsDir(t, nc, reg)
	pull := func(img registrytest.Image) {
		t.Helper()
		ctrd.mustCtr(t, "content", "fetch", "--all-platforms", "--hosts-dir", hostsDir, reg.Host()+"/"+img.Repo+":"+img.Tag)
		if n := storeBytes(t, nc.dataDir); n > maxSize {
			t.Fatalf("data directory holds %d bytes after pulling %s, more than --max-size %d", n, img.Repo, maxSize)
		}
	}
	for _, img := range imgs {
		pull(img)
	}
	last, first := imgs[len(imgs)-1], imgs[0]
	for _, d := range blobDigests(first) {
		if nc.has(d) {
			t.Errorf("the least recently used image's blob %s is still cached", d)
		}
	}
	reg.Close()
	ctrd.mustCtr(t, "image", "rm", "--sync", reg.Host()+"/"+last.Repo+":"+last.Tag)
	pull(last)
	requireContent(t, ctrd, imageDigests(last))
	if !t.Failed() {
		fmt.Printf("e2e: 300 MiB pulled through a 100 MiB store (now %d MiB); newest image pulled with upstream down: ok\n",
			storeBytes(t, nc.dataDir)>>20)
	}
}

// storeBytes sums the sizes of the files under dir.
func storeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
