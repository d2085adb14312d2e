//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

// skopeoTimeout bounds one skopeo copy of the small test image through
// 127.0.0.1.
const skopeoTimeout = 2 * time.Minute

// TestSkopeoTwoRegistriesOneRepository pulls, with skopeo from Debian's
// packages, the image e2e/app:v1 from two registries that both have one,
// with different content: up.test and other.test, both mirrored by one
// nodecache through the containers-registries.conf file that `nodecache
// containers-conf` writes (a mirror at 127.0.0.1:PORT/<registry>, so
// nodecache learns the registry from the path). Each pull must yield its
// own registry's image; then, with both upstreams stopped, each again.
//
// The names do not resolve (.test is reserved), so skopeo, which falls
// back to the registry itself when a mirror fails, can only succeed
// through nodecache.
func TestSkopeoTwoRegistriesOneRepository(t *testing.T) {
	skopeo := requireSkopeo(t)
	regs := map[string]*registrytest.Registry{"up.test": registrytest.Start(t), "other.test": registrytest.Start(t)}
	imgs := map[string]unpackableImage{}
	var args []string
	for name, reg := range regs {
		imgs[name] = pushUnpackableImage(t, reg, "e2e/app", "v1", "from "+name+"\n")
		args = append(args, "--registry", name+"="+reg.URL())
	}
	if imgs["up.test"].manifest == imgs["other.test"].manifest {
		t.Fatal("the two registries hold the same image; the test could not tell them apart")
	}
	nc := startNodecacheWith(t, args...)
	conf := writeContainersConf(t, nc, "up.test", "other.test")

	copyAll := func(round string) {
		t.Helper()
		for name, img := range imgs {
			dir := filepath.Join(t.TempDir(), name)
			out, err := skopeo.copy(t, conf, "docker://"+name+"/e2e/app:v1", "dir:"+dir)
			if err != nil {
				// skopeo tried the mirror, then the registry itself, which
				// does not resolve: nodecache did not serve /v2/<name>/....
				t.Fatalf("%s: skopeo copy from %s failed; nodecache must serve the registry named in the path (/v2/%s/e2e/app/...): %v",
					round, name, name, err)
			}
			t.Logf("%s: skopeo copy from %s:\n%s", round, name, out)
			checkDirImage(t, dir, img, name)
		}
	}
	copyAll("upstreams up")
	for name, img := range imgs {
		for _, d := range img.all() {
			if !nc.holds(d) {
				t.Errorf("nodecache's store lacks %s of %s's image", d, name)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, reg := range regs {
		reg.Close()
	}
	mark := len(nc.Output())
	copyAll("upstreams stopped")
	if !strings.Contains(nc.Output()[mark:], "serving stale tag") {
		t.Errorf("nodecache did not log serving a stale tag with the upstreams stopped")
	}
	if !t.Failed() {
		fmt.Printf("e2e: skopeo: e2e/app:v1 from up.test and other.test via one nodecache, each its own image; again with both upstreams stopped: ok\n")
	}
}

// skopeoCmd is Debian's skopeo, run with a home of its own, so that no
// user configuration or credentials of the machine take part.
type skopeoCmd struct {
	bin, home, policy string
}

// requireSkopeo ends the test (see missing) unless skopeo is installed;
// `make e2e` installs Debian's package (hack/need.sh). It needs no root.
func requireSkopeo(t *testing.T) skopeoCmd {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		missing(t, "e2e: skopeo not found; `make e2e` installs Debian's skopeo package (hack/need.sh)")
	}
	s := skopeoCmd{bin: bin, home: t.TempDir()}
	// Signature policy: accept anything, as the test images are unsigned.
	s.policy = filepath.Join(s.home, "policy.json")
	if err := os.WriteFile(s.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// copy runs `skopeo copy src dst` with conf as its registries.conf.
func (s skopeoCmd) copy(t *testing.T, conf, src, dst string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), skopeoTimeout)
	defer cancel()
	// --registries-conf is hidden but present in every skopeo since 0.1.40;
	// Debian's 1.9 ignores the CONTAINERS_REGISTRIES_CONF variable that
	// later releases read. The drop-in directory,
	// /etc/containers/registries.conf.d, is still read: a file there that
	// names up.test or other.test would take part.
	cmd := exec.CommandContext(ctx, s.bin, "--debug", "--registries-conf", conf, "--policy", s.policy, "copy", src, dst)
	cmd.Env = append(os.Environ(),
		"HOME="+s.home,
		"XDG_CONFIG_HOME="+filepath.Join(s.home, ".config"),
		"XDG_RUNTIME_DIR="+s.home,
		"REGISTRY_AUTH_FILE="+filepath.Join(s.home, "auth.json"),
	)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no answer within %v (skopeoTimeout): %w", skopeoTimeout, err)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out), nil
}

// writeContainersConf writes, with `nodecache containers-conf`, the
// registries.conf drop-in that mirrors the registries through nc, and
// returns its path. skopeo reads it as its main registries.conf
// (--registries-conf): a drop-in has the same format.
func writeContainersConf(t *testing.T, nc *nodecache, registries ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "50-nodecache.conf")
	mirror := strings.TrimPrefix(nc.url, "http://")
	args := []string{"containers-conf", "--file", file, "--mirror", mirror}
	for _, r := range registries {
		args = append(args, "--registry", r)
	}
	if _, err := run(t.Context(), nc.bin, args...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("registries.conf:\n%s", data)
	return file
}

// checkDirImage checks that the dir: layout skopeo wrote holds exactly
// img: its manifest, byte for byte, and each of its blobs.
func checkDirImage(t *testing.T, dir string, img unpackableImage, name string) {
	t.Helper()
	manifest, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(manifest); got != img.manifest {
		t.Fatalf("skopeo got manifest %s for %s/e2e/app:v1, want %s's own %s", got, name, name, img.manifest)
	}
	for _, d := range img.blobs {
		data, err := os.ReadFile(filepath.Join(dir, d.Encoded()))
		if err != nil {
			t.Errorf("%s: blob %s: %v", name, d, err)
			continue
		}
		if got := digest.FromBytes(data); got != d {
			t.Errorf("%s: blob %s holds %s", name, d, got)
		}
	}
}
