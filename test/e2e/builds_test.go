//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// containerd2Env names the directory holding containerd and ctr 2.x, built
// from the Go module proxy at a pinned version by hack/containerd2.sh
// (`make e2e` sets it). Unset, the containerd tests fail (see missing).
const containerd2Env = "NODECACHE_E2E_CONTAINERD2"

// containerdBuild is one installation of containerd the tests pull with.
type containerdBuild struct {
	name         string // for subtest names: "1.6.20", "2.4.2"
	containerd   string // the daemon's binary
	ctr          string // its client
	major, minor int
	// localPull sets 2.x's use_local_image_pull: the CRI pulls with the
	// client, as 1.x does, instead of through the transfer service.
	localPull bool
}

// containerdBuilds returns Debian's containerd from PATH and the 2.x
// build containerd2Env names; it skips the test if it does not run as
// root, and fails it if either build is missing.
func containerdBuilds(t *testing.T) []containerdBuild {
	t.Helper()
	requirePrivileges(t)
	var builds []containerdBuild
	debian := containerdBuild{containerd: mustLookPath(t, "containerd"), ctr: mustLookPath(t, "ctr")}
	builds = append(builds, debian.withVersion(t))
	if dir := os.Getenv(containerd2Env); dir != "" {
		b := containerdBuild{containerd: filepath.Join(dir, "containerd"), ctr: filepath.Join(dir, "ctr")}
		b = b.withVersion(t)
		if b.major != 2 {
			t.Fatalf("%s=%s holds containerd %s, want 2.x", containerd2Env, dir, b.name)
		}
		builds = append(builds, b)
	} else {
		missing(t, "e2e: %s is unset, so containerd 2.x would go untested; `make e2e` builds it (hack/containerd2.sh) and sets it", containerd2Env)
	}
	return builds
}

func mustLookPath(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		missing(t, "e2e: %s not found; `make e2e` installs Debian's containerd package (hack/need.sh)", bin)
	}
	return p
}

// versionRE finds the version in `containerd --version`: "containerd
// github.com/containerd/containerd 1.6.20~ds1 ..." or "containerd
// github.com/containerd/containerd/v2 2.4.2+unknown".
var versionRE = regexp.MustCompile(`\s(\d+)\.(\d+)\.(\d+)`)

// withVersion asks the binary its version.
func (b containerdBuild) withVersion(t *testing.T) containerdBuild {
	t.Helper()
	out, err := run(t.Context(), b.containerd, "--version")
	if err != nil {
		t.Fatal(err)
	}
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no version in %q", out)
	}
	b.major, _ = strconv.Atoi(m[1])
	b.minor, _ = strconv.Atoi(m[2])
	b.name = m[1] + "." + m[2] + "." + m[3]
	return b
}

func (b containerdBuild) String() string {
	if b.localPull {
		return "containerd " + b.name + " (local pull)"
	}
	return "containerd " + b.name
}

// eachContainerd runs test once per containerd build, as a subtest.
func eachContainerd(t *testing.T, test func(t *testing.T, b containerdBuild)) {
	for _, b := range containerdBuilds(t) {
		t.Run("containerd-"+b.name, func(t *testing.T) { test(t, b) })
	}
}

// eachCRIPull runs test once per containerd build and, on 2.x, once per
// CRI pull: the transfer service's (the default) and the local one.
func eachCRIPull(t *testing.T, test func(t *testing.T, b containerdBuild)) {
	for _, b := range containerdBuilds(t) {
		if b.major < 2 {
			t.Run("containerd-"+b.name, func(t *testing.T) { test(t, b) })
			continue
		}
		t.Run("containerd-"+b.name+"-transfer", func(t *testing.T) { test(t, b) })
		b.localPull = true
		t.Run("containerd-"+b.name+"-local-pull", func(t *testing.T) { test(t, b) })
	}
}

// configVersion is the config file version the build reads natively:
// 2 for 1.x, 3 for 2.0 to 2.3, 4 from 2.4 on (server settings moved
// under plugins; the tests pass the socket with --address, which every
// version takes).
func (b containerdBuild) configVersion() int {
	switch {
	case b.major < 2:
		return 2
	case b.minor < 4:
		return 3
	}
	return 4
}

// config returns the build's configuration for a containerd whose files
// all live under dir, with the CRI pulling through hostsDir, or without
// CRI if hostsDir is empty.
func (b containerdBuild) config(dir, hostsDir string) string {
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	cni := filepath.Join(dir, "cni")
	if b.major < 2 {
		cri, disabled := "", criDisabled
		if hostsDir != "" {
			cri = fmt.Sprintf(criConfig, filepath.Join(cni, "bin"), filepath.Join(cni, "net.d"), hostsDir)
			disabled = ""
		}
		return fmt.Sprintf(containerdConfig, root, state, disabled, filepath.Join(dir, "containerd.sock"), filepath.Join(dir, "opt"), cri)
	}
	cri, disabled := "", cri2Disabled
	if hostsDir != "" {
		cri = fmt.Sprintf(cri2Config, b.localPull, hostsDir, filepath.Join(cni, "bin"), filepath.Join(cni, "net.d"))
		disabled = ""
	}
	return fmt.Sprintf(containerd2Config, b.configVersion(), root, state, disabled, filepath.Join(dir, "opt"), cri)
}

// ctr runs this build's ctr against the containerd at sock.
func (b containerdBuild) run(ctx context.Context, sock, namespace string, args ...string) (string, error) {
	return run(ctx, b.ctr, append([]string{"--address", sock, "--namespace", namespace}, args...)...)
}
