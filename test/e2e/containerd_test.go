//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

const (
	// ctrNamespace keeps the test's images apart from anything else, though
	// the containerd is private to the test anyway.
	ctrNamespace = "e2e"
	// ctrTimeout bounds one ctr command; a pull of the test image through
	// 127.0.0.1 takes well under a second.
	ctrTimeout = 2 * time.Minute
	// maxSocketPath is the longest path of a unix socket on Linux: the
	// 108 bytes of sun_path less its terminating NUL.
	maxSocketPath = 107
)

// containerdConfig is a containerd 1.6 configuration with only what a pull
// into the content store needs: no snapshotters that need special file
// systems or devices (native and overlayfs remain), and no CRI unless the
// cri argument configures it. opt keeps its directory in the test's,
// instead of creating /opt/containerd on the machine.
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = [%s
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`

// criDisabled is the disabled_plugins entry that turns the CRI plugin off.
const criDisabled = `
  "io.containerd.grpc.v1.cri",`

// criConfig configures containerd 1.6's CRI plugin to pull through the
// hosts directory given as config_path, the way a node's
// /etc/containerd/config.toml does. The rest keeps it inside the test's
// directory and away from what only pods need: cgroups, and CNI, which
// would otherwise create /etc/cni/net.d on the host. Image unpacking uses
// overlayfs, the default, which works on the temporary directory's ext4.
const criConfig = `
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`

// containerd2Config is the same for containerd 2.x, in the build's config
// version. Version 4 (2.4) moved the server settings under plugins, so the
// socket is given with --address, which every version takes. NRI is off,
// since it would create its socket under /var/run/nri, and opt keeps its
// directory in the test's.
const containerd2Config = `version = %d
root = %q
state = %q
disabled_plugins = [%s
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.zfs",
]

[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`

// cri2Disabled turns containerd 2.x's CRI plugins off.
const cri2Disabled = `
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",`

// cri2Config configures containerd 2.x's CRI images plugin to pull through
// the hosts directory given as config_path: ONE directory, as a node's
// config must set it (a colon-separated list, the default when it is
// unset, is read as one path by the transfer service's pull, which the
// CRI uses from 2.1 on). use_local_image_pull chooses the CRI's pull:
// false, the default, is the transfer service's; true is the client pull
// of containerd 1.x.
const cri2Config = `
[plugins."io.containerd.cri.v1.images"]
  use_local_image_pull = %t
[plugins."io.containerd.cri.v1.images".registry]
  config_path = %q
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%q]
  conf_dir = %q
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`

// containerd is a containerd daemon private to a test, with its root,
// state, socket and config in a temporary directory.
type containerd struct {
	*daemon
	build     containerdBuild
	sock      string
	namespace string // for ctr
}

// startContainerd starts containerd without CRI and waits until ctr can
// reach it. Its cleanups stop it, then check that it left no mounts behind.
func startContainerd(t *testing.T, b containerdBuild) *containerd {
	t.Helper()
	return startContainerdWith(t, b, "")
}

// startContainerdCRI starts containerd with its CRI plugin pulling through
// hostsDir. ctr then works in the CRI's namespace, k8s.io.
func startContainerdCRI(t *testing.T, b containerdBuild, hostsDir string) *containerd {
	t.Helper()
	c := startContainerdWith(t, b, hostsDir)
	c.namespace = "k8s.io"
	return c
}

// startContainerdWith starts containerd with the CRI pulling through
// hostsDir, or with CRI disabled if hostsDir is empty.
func startContainerdWith(t *testing.T, b containerdBuild, hostsDir string) *containerd {
	t.Helper()
	dir := t.TempDir()
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	sock := filepath.Join(dir, "containerd.sock")
	// containerd also listens on sock+".ttrpc"; a unix socket path has at
	// most maxSocketPath bytes, and a long TMPDIR under the test's long
	// directory name passes that, which containerd reports only as a
	// failed bind, and the test as a daemon never ready.
	if n := len(sock + ".ttrpc"); n > maxSocketPath {
		t.Fatalf("containerd's socket %s.ttrpc is %d bytes, over the %d a unix socket takes: set a shorter TMPDIR", sock, n, maxSocketPath)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(b.config(dir, hostsDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registered before the daemon's own cleanup, so it runs after it.
	t.Cleanup(func() { checkNoMounts(t, dir) })

	c := &containerd{build: b, sock: sock, namespace: ctrNamespace}
	c.daemon = startDaemon(t, "containerd "+b.name, b.containerd,
		"--config", cfg, "--root", root, "--state", state, "--address", sock, "--log-level", "debug")
	c.waitReady(t, func(ctx context.Context) error {
		_, err := c.ctr(ctx, "version")
		return err
	})
	return c
}

// ctr runs ctr against this containerd.
func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	return c.build.run(ctx, c.sock, c.namespace, args...)
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

// writeHostsDir runs `nodecache hosts` to write a containerd hosts
// directory in which reg is mirrored by nc, and returns the directory, for
// ctr --hosts-dir or the CRI's config_path. The registry is named with its
// plain-HTTP endpoint, so that the fallback in the file is the real one.
// containerd 1.6 loads certs.d/<host:port>/hosts.toml for a registry with
// a port, as ctr --debug shows ("loading host directory").
func writeHostsDir(t *testing.T, nc *nodecache, reg *registrytest.Registry) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs.d")
	out, err := run(t.Context(), nc.bin, "hosts", "--dir", dir,
		"--registry", reg.Host()+"="+reg.URL(), "--mirror", nc.url)
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(dir, reg.Host(), "hosts.toml"))
	if err != nil {
		t.Fatalf("nodecache hosts said %q but: %v", out, err)
	}
	t.Logf("nodecache hosts: %s%s", out, file)
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
