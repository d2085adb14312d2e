//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

// TestMain removes, at the end, the daemon daemontest.Binary built.
func TestMain(m *testing.M) { daemontest.Main(m) }

// TestContainerdPullThroughNodecache pulls a multi-arch image with ctr from
// an upstream registry mirrored by nodecache through a hosts.toml, checks
// that every blob came through nodecache, then stops the upstream, deletes
// the image from containerd and pulls it again from nodecache's cache alone.
//
// ctr pulls with `content fetch`, not `image pull`: the test layers are
// random bytes labelled tar+gzip, and ctr 1.6's `image pull` always unpacks
// (it has no --skip-unpack), which would fail on them.
//
// It runs once per containerd build: Debian's 1.6 and the pinned 2.x.
func TestContainerdPullThroughNodecache(t *testing.T) {
	eachContainerd(t, testContainerdPull)
}

func testContainerdPull(t *testing.T, b containerdBuild) {
	reg := registrytest.Start(t)
	img := reg.PushImage(t, "e2e/app", "v1", 200_000, 1_000_000)
	nc := startNodecache(t, reg)
	ctrd := startContainerd(t, b)
	t.Logf("containerd:\n%s", ctrd.mustCtr(t, "version"))
	hostsDir := writeHostsDir(t, nc, reg)
	ref := reg.Host() + "/e2e/app:v1"
	pull := []string{"--debug", "content", "fetch", "--all-platforms", "--hosts-dir", hostsDir, ref}

	ctrd.mustCtr(t, pull...)
	all := imageDigests(img)
	requireContent(t, ctrd, all)
	blobs := blobDigests(img)
	for _, d := range blobs {
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("upstream served blob %s %d times, want once (through nodecache)", d, n)
		}
	}
	for _, d := range all {
		if !nc.holds(d) {
			t.Errorf("nodecache's store lacks %s after the pull", d)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	reg.Close()
	ctrd.mustCtr(t, "image", "rm", "--sync", ref)
	if left := ctrd.present(t, all); len(left) > 0 {
		t.Fatalf("content still in containerd after image rm --sync: %v", left)
	}
	mark := len(nc.Output()) // keep the first pull's log for failures
	ctrd.mustCtr(t, pull...)
	requireContent(t, ctrd, all)
	// With --tag-ttl 0, nodecache asked upstream for the tag and could only
	// answer from its last known digest.
	if !strings.Contains(nc.Output()[mark:], "serving stale tag") {
		t.Errorf("nodecache did not log serving a stale tag on the second pull")
	}
	if t.Failed() {
		return
	}
	fmt.Printf("e2e: containerd %s: ctr pulled %d blobs and %d manifests via nodecache; second pull with upstream down: ok\n",
		b.name, len(blobs), len(all)-len(blobs))
}

// requirePrivileges skips the test unless it runs as root, and ends it
// (see missing) unless containerd and ctr are installed.
func requirePrivileges(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root to run containerd; run `make e2e` as root")
	}
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing(t, "e2e: %s not found; `make e2e` installs Debian's containerd package (hack/need.sh)", bin)
		}
	}
}

// missing ends a test whose client is not there. As root, where `make
// e2e` installs or builds every client before the tests run, that is a
// failure: a run that skipped a client must not pass as if it had tested
// it. As another user, who cannot install them, the test skips.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// nodecache is a nodecache daemon built from this module.
type nodecache struct {
	*daemontest.Process
	bin     string // the binary, for its other commands
	url     string // http://127.0.0.1:PORT
	dataDir string
}

// startNodecache builds and starts nodecache in front of reg, with a tag TTL
// of zero so that every tag resolution asks upstream first.
func startNodecache(t *testing.T, reg *registrytest.Registry, extra ...string) *nodecache {
	t.Helper()
	return startNodecacheWith(t, append([]string{"--registry", reg.Host() + "=" + reg.URL()}, extra...)...)
}

// startNodecacheWith builds and starts nodecache with args, a tag TTL of
// zero and its store in a temporary directory.
func startNodecacheWith(t *testing.T, args ...string) *nodecache {
	t.Helper()
	nc := &nodecache{bin: daemontest.Binary(t), dataDir: filepath.Join(t.TempDir(), "data")}
	nc.Process = daemontest.MustStart(t, nc.bin, append([]string{
		"--data-dir", nc.dataDir,
		"--tag-ttl", "0",
		"--shutdown-grace", "2s",
		"--log-level", "debug"}, args...)...)
	nc.url = nc.URL
	return nc
}

// has reports whether nodecache's store holds d, at the path the diskstore
// package documents: blobs/<algorithm>/<first two hex digits>/<hex>.
func (nc *nodecache) has(d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(nc.dataDir, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded()))
	return err == nil
}

// commitWait bounds how long holds waits for a commit: a fill's commit
// follows its last byte once the store's fills have gone quiet, within
// diskstore's maxCommitDelay (10 s).
const commitWait = 15 * time.Second

// holds reports whether nodecache's store holds d, waiting for the
// commit up to commitWait.
func (nc *nodecache) holds(d digest.Digest) bool {
	deadline := time.Now().Add(commitWait)
	for !nc.has(d) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
	return true
}

// imageDigests returns every digest of img, sorted.
func imageDigests(img registrytest.Image) []digest.Digest {
	var all []digest.Digest
	for d := range img.Blobs {
		all = append(all, d)
	}
	slices.Sort(all)
	return all
}

// blobDigests returns the digests of img's layers and configs: what a
// client fetches by the blobs route rather than the manifests route.
func blobDigests(img registrytest.Image) []digest.Digest {
	var blobs []digest.Digest
	for p, layers := range img.Layers {
		blobs = append(blobs, layers...)
		blobs = append(blobs, img.Configs[p])
	}
	return blobs
}

// requireContent fails the test unless containerd holds all of want.
func requireContent(t *testing.T, c *containerd, want []digest.Digest) {
	t.Helper()
	if in := c.present(t, want); len(in) != len(want) {
		t.Fatalf("containerd holds %d of the image's %d digests after the pull", len(in), len(want))
	}
}
