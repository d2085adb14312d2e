//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	// ctrNamespace keeps the test's images apart from anything else, though
	// the containerd is private to the test anyway.
	ctrNamespace = "e2e"
	// ctrTimeout bounds one ctr command; a pull of the test image through
	// 127.0.0.1 takes well under a second.
	ctrTimeout = 2 * time.Minute
)

// containerdConfig is a containerd 1.6 configuration with only what a pull
// into the content store needs: no CRI, and no snapshotters that need
// special file systems or devices (native and overlayfs remain).
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q
`

// containerd is a containerd daemon private to a test, with its root,
// state, socket and config in a temporary directory.
type containerd struct {
	*daemon
	sock string
}

// startContainerd starts containerd and waits until ctr can reach it. Its
// cleanups stop it, then check that it left no mounts behind.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, containerdConfig, root, state, sock), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registered before the daemon's own cleanup, so it runs after it.
	t.Cleanup(func() { checkNoMounts(t, dir) })

	c := &containerd{sock: sock}
	c.daemon = startDaemon(t, "containerd", "containerd",
		"--config", cfg, "--root", root, "--state", state, "--address", sock, "--log-level", "debug")
	c.waitReady(t, func(ctx context.Context) error {
		_, err := c.ctr(ctx, "version")
		return err
	})
	return c
}

// ctr runs ctr against this containerd.
func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ctr", append([]string{"--address", c.sock, "--namespace", ctrNamespace}, args...)...)
}

// mustCtr runs ctr with ctrTimeout and fails the test if it fails.
func (c *containerd) mustCtr(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ctrTimeout)
	defer cancel()
	out, err := c.ctr(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// content returns the digests in containerd's content store.
func (c *containerd) content(t *testing.T) map[string]bool {
	t.Helper()
	have := make(map[string]bool)
	for _, line := range strings.Split(c.mustCtr(t, "content", "ls", "--quiet"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			have[line] = true
		}
	}
	return have
}

// present returns those of want that are in containerd's content store.
func (c *containerd) present(t *testing.T, want []digest.Digest) []digest.Digest {
	t.Helper()
	have := c.content(t)
	var in []digest.Digest
	for _, d := range want {
		if have[d.String()] {
			in = append(in, d)
		}
	}
	return in
}

// writeHostsDir writes a containerd hosts directory in which registry
// (host:port) is mirrored by the plain-HTTP nodecache at mirrorURL, with the
// registry itself, also plain HTTP, as the fallback. It returns the
// directory to pass as --hosts-dir.
func writeHostsDir(t *testing.T, registry, mirrorURL string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs.d")
	// containerd 1.6 loads certs.d/<host:port>/hosts.toml for a registry
	// with a port, as ctr --debug shows ("loading host directory").
	hostDir := filepath.Join(dir, registry)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf(`server = "http://%s"

[host.%q]
  capabilities = ["pull", "resolve"]
`, registry, mirrorURL)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkNoMounts fails the test if anything is still mounted under dir.
func checkNoMounts(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("cannot check for leftover mounts: %v", err)
		return
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// Field 5 is the mount point; see proc(5).
		if fields := strings.Fields(s.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			t.Errorf("containerd left a mount: %s", fields[4])
		}
	}
}
