package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/pkg/sysregistriesv2"
	"github.com/containers/image/v5/types"
)

// runContainersConf runs `nodecache containers-conf` through dispatch
// with --file file.
func runContainersConf(t *testing.T, file string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := dispatch(context.Background(), append([]string{"containers-conf", "--file", file}, args...), &out, &errOut)
	return out.String(), err
}

func mustRunContainersConf(t *testing.T, file string, args ...string) string {
	t.Helper()
	out, err := runContainersConf(t, file, args...)
	if err != nil {
		t.Fatalf("nodecache containers-conf %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// pullSources returns the endpoints containers/image's own parser would
// pull image from, in order, as location (+insecure), with the drop-in
// directory dir and an empty main registries.conf.
func pullSources(t *testing.T, dir, image string) []string {
	t.Helper()
	main := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(main, []byte("unqualified-search-registries = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sys := &types.SystemContext{SystemRegistriesConfPath: main, SystemRegistriesConfDirPath: dir}
	// Clients look up the fully qualified name (docker.io/library/...).
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		t.Fatal(err)
	}
	sysregistriesv2.InvalidateCache()
	reg, err := sysregistriesv2.FindRegistry(sys, ref.String())
	if err != nil {
		t.Fatalf("containers/image cannot read the drop-in: %v", err)
	}
	if reg == nil {
		return nil
	}
	srcs, err := reg.PullSourcesFromReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range srcs {
		e := s.Reference.String()
		if s.Endpoint.Insecure {
			e += " insecure"
		}
		out = append(out, e)
	}
	return out
}

// TestContainersConfParsedByContainersImage: the file is read by
// containers/image's own parser the way the pitfalls in the docs say:
// nodecache first, with the registry in the path, then the registry.
func TestContainersConfParsedByContainersImage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "50-nodecache.conf")
	mustRunContainersConf(t, file, "--registry", "docker.io", "--registry", "quay.io", "--registry", "localhost")
	tests := []struct{ image, want string }{
		{"alpine:3", "127.0.0.1:5050/docker.io/library/alpine:3 insecure,docker.io/library/alpine:3"},
		{"docker.io/library/alpine@sha256:" + strings.Repeat("a", 64),
			"127.0.0.1:5050/docker.io/library/alpine@sha256:" + strings.Repeat("a", 64) + " insecure,docker.io/library/alpine@sha256:" + strings.Repeat("a", 64)},
		{"quay.io/demo/app:v1", "127.0.0.1:5050/quay.io/demo/app:v1 insecure,quay.io/demo/app:v1"},
		{"localhost/app:v1", "127.0.0.1:5050/localhost/app:v1 insecure,localhost/app:v1"},
		{"ghcr.io/demo/app:v1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			if got := strings.Join(pullSources(t, dir, tt.image), ","); got != tt.want {
				t.Errorf("pull sources %q, want %q", got, tt.want)
			}
		})
	}
}

func TestContainersConfHTTPSMirror(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "50-nodecache.conf")
	mustRunContainersConf(t, file, "--registry", "quay.io", "--mirror", "https://cache.local:8443")
	got := strings.Join(pullSources(t, dir, "quay.io/a/b:c"), ",")
	if want := "cache.local:8443/quay.io/a/b:c,quay.io/a/b:c"; got != want {
		t.Errorf("pull sources %q, want %q", got, want)
	}
}

// TestContainersConfIdempotentAndRemove: a second run changes nothing;
// runs add registries; --remove takes out what was named and deletes
// the file once empty.
func TestContainersConfIdempotentAndRemove(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "conf.d", "50-nodecache.conf")
	if out := mustRunContainersConf(t, file, "--registry", "quay.io"); !strings.HasSuffix(out, ": created\n") {
		t.Fatalf("first run: %q", out)
	}
	first := readFile(t, file)
	if out := mustRunContainersConf(t, file, "--registry", "QUAY.IO"); !strings.HasSuffix(out, ": unchanged\n") {
		t.Fatalf("second run: %q", out)
	}
	if !bytes.Equal(first, readFile(t, file)) {
		t.Fatal("an unchanged run changed the bytes")
	}
	if out := mustRunContainersConf(t, file, "--registry", "index.docker.io"); !strings.HasSuffix(out, ": updated\n") {
		t.Fatalf("adding docker.io: %q", out)
	}
	sources := strings.Join(pullSources(t, filepath.Dir(file), "quay.io/a:b"), ",") + " " +
		strings.Join(pullSources(t, filepath.Dir(file), "busybox"), ",")
	if want := "127.0.0.1:5050/quay.io/a:b insecure,quay.io/a:b 127.0.0.1:5050/docker.io/library/busybox insecure,docker.io/library/busybox"; sources != want {
		t.Fatalf("after two runs: %q, want %q", sources, want)
	}
	if out := mustRunContainersConf(t, file, "--remove", "--registry", "quay.io"); !strings.HasSuffix(out, ": updated\n") {
		t.Fatalf("remove quay.io: %q", out)
	}
	if got := pullSources(t, filepath.Dir(file), "quay.io/a:b"); got != nil {
		t.Fatalf("quay.io still mirrored: %q", got)
	}
	if out := mustRunContainersConf(t, file, "--remove"); !strings.HasSuffix(out, ": removed\n") {
		t.Fatalf("remove all: %q", out)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left behind: %v", err)
	}
	if out := mustRunContainersConf(t, file, "--remove"); !strings.HasSuffix(out, ": absent\n") {
		t.Fatalf("remove again: %q", out)
	}
}

// TestContainersConfLeavesOthersFiles: a file that containers-conf did
// not write is neither replaced nor removed.
func TestContainersConfLeavesOthersFiles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "50-nodecache.conf")
	theirs := "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n"
	if err := os.WriteFile(file, []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--registry", "quay.io"}, {"--remove"}} {
		if _, err := runContainersConf(t, file, args...); err == nil || !strings.Contains(err.Error(), "not written by nodecache") {
			t.Errorf("%v: err %v, want a refusal", args, err)
		}
	}
	if got := string(readFile(t, file)); got != theirs {
		t.Errorf("file changed to %q", got)
	}
}

func TestContainersConfBadInput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f.conf")
	tests := []struct {
		args []string
		flag string
	}{
		{nil, "--registry"},
		{[]string{"--registry", "https://quay.io"}, "--registry"},
		{[]string{"--registry", "quay.io/ns"}, "--registry"},
		{[]string{"--registry", "bad host"}, "--registry"},
		{[]string{"--registry", ""}, "--registry"},
		{[]string{"--registry", "localhost:5000"}, "--registry"},
		{[]string{"--registry", "[::1]"}, "--registry"},
		{[]string{"--registry", "registry"}, "--registry"},
		{[]string{"--registry", "quay.io", "--mirror", "ftp://x:1"}, "--mirror"},
		{[]string{"--registry", "quay.io", "--mirror", "127.0.0.1:5050/docker.io"}, "--mirror"},
		// containers/image cannot parse [::1]:5050/quay.io/... as a
		// reference, and fails the pull instead of skipping the mirror.
		{[]string{"--registry", "quay.io", "--mirror", "[::1]:5050"}, "--mirror"},
		{[]string{"--registry", "quay.io", "--mirror", "http://nodecache"}, "--mirror"},
		{[]string{"--registry", "quay.io", "--file", ""}, "--file"},
		{[]string{"--registry", "quay.io", "extra"}, "extra"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"containers-conf"}, tt.args...)
			if !containsFlag(tt.args, "--file") {
				args = append([]string{"containers-conf", "--file", file}, tt.args...)
			}
			err := dispatch(context.Background(), args, &out, &errOut)
			if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tt.flag) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v (exit %d), want one line naming %s, exit 2", err, exitCode(err), tt.flag)
			}
			if _, serr := os.Stat(file); serr == nil {
				t.Fatal("a refused run wrote the file")
			}
		})
	}
}

func containsFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}

func FuzzRegistryName(f *testing.F) {
	for _, s := range []string{"docker.io", "localhost:5000", "[::1]:5000", "a/b", "A.B", "x:99999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		name, err := registryName(v)
		if err != nil {
			return
		}
		// A name that passes is one image reference's domain, so it
		// can be a prefix and a mirror path segment.
		ref, perr := reference.ParseNormalizedNamed(name + "/x")
		if perr != nil || reference.Domain(ref) != name {
			t.Fatalf("registryName(%q) = %q, which is not a reference domain: %v", v, name, perr)
		}
	})
}
