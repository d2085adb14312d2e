package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nodecache/internal/hostsdir"
)

const testMirror = "http://127.0.0.1:5050"

// otherHosts is a hosts.toml with two mirrors of its own, comments, a
// subtable and a multi-line array, as an operator might have written it;
// hostsdir's merge tests use the same file.
var otherHosts = func() string {
	b, err := os.ReadFile("../../internal/hostsdir/testdata/other-hosts.toml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// runHosts runs `nodecache hosts` through dispatch with --dir dir.
func runHosts(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := dispatch(context.Background(), append([]string{"hosts", "--dir", dir, "--containerd", ""}, args...), &out, &errOut)
	return out.String(), err
}

func mustRunHosts(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := runHosts(t, dir, args...)
	if err != nil {
		t.Fatalf("nodecache hosts %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// hostOrder returns the hosts containerd's own loader (through hostsdir.Load) tries for registry
// with config_path dir, as scheme://host.
func hostOrder(t *testing.T, dir, registry string) []string {
	t.Helper()
	hosts, err := hostsdir.Load(context.Background(), dir, registry)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, h := range hosts {
		order = append(order, h.Scheme+"://"+h.Host)
	}
	return order
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile writes a hosts.toml, and the certificate it names, if any,
// since containerd's loader reads it.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(content, `"mirror.pem"`) {
		writeCert(t, filepath.Join(filepath.Dir(path), "mirror.pem"))
	}
}

// writeCert writes a self-signed certificate in PEM.
func writeCert(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mirror.example.com"},
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists dir but for the test's certificate, to catch leftover
// temporary files.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "mirror.pem" {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestHostsWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing string // docker.io/hosts.toml before the run; "" for none
		args     []string
		file     string // the file written, under --dir
		registry string // the registry containerd pulls from
		mirror   string // --mirror, if not testMirror
		want     []string
	}{
		{
			name: "new file", args: []string{"--registry", "docker.io"},
			file: "docker.io/hosts.toml", registry: "docker.io",
			want: []string{testMirror, "https://registry-1.docker.io"},
		},
		{
			name: "other registry", args: []string{"--registry", "ghcr.io", "--mirror", "http://127.0.0.1:6000/"},
			file: "ghcr.io/hosts.toml", registry: "ghcr.io", mirror: "http://127.0.0.1:6000",
			want: []string{"http://127.0.0.1:6000", "https://ghcr.io"},
		},
		{
			name: "explicit endpoint", args: []string{"--registry", "127.0.0.1:5000=http://127.0.0.1:5000"},
			file: "127.0.0.1:5000/hosts.toml", registry: "127.0.0.1:5000",
			want: []string{testMirror, "http://127.0.0.1:5000"},
		},
		{
			name: "all registries", args: []string{"--all"},
			file: "_default/hosts.toml", registry: "quay.io",
			want: []string{testMirror, "https://quay.io"},
		},
		{
			name: "other hosts kept", existing: otherHosts, args: []string{"--registry", "docker.io"},
			file: "docker.io/hosts.toml", registry: "docker.io",
			want: []string{testMirror, "https://mirror.example.com", "http://10.0.0.1:5000", "https://registry-1.docker.io"},
		},
		{
			name:     "nodecache moved first, not duplicated, TLS options dropped",
			existing: "[host.\"https://a.example\"]\n\n[host.\"http://127.0.0.1:5050\"]\n  skip_verify = true\n",
			args:     []string{"--registry", "docker.io"},
			file:     "docker.io/hosts.toml", registry: "docker.io",
			want: []string{testMirror, "https://a.example", "https://registry-1.docker.io"},
		},
		{
			name:     "TLS options dropped from nodecache's host",
			existing: "server = \"https://registry-1.docker.io\"\n\n[host.\"http://127.0.0.1:5050\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
			args:     []string{"--registry", "docker.io"},
			file:     "docker.io/hosts.toml", registry: "docker.io",
			want: []string{testMirror, "https://registry-1.docker.io"},
		},
		{
			name: "no host tables, no server", existing: "# nothing yet\ncapabilities = [\"pull\"]",
			args: []string{"--registry", "docker.io"},
			file: "docker.io/hosts.toml", registry: "docker.io",
			want: []string{testMirror, "https://registry-1.docker.io"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if tc.existing != "" {
				writeFile(t, path, tc.existing)
			}
			out := mustRunHosts(t, dir, tc.args...)
			if !strings.HasPrefix(out, path+": ") || strings.Contains(out, "unchanged") {
				t.Errorf("first run reported %q", out)
			}
			if got := hostOrder(t, dir, tc.registry); !slices.Equal(got, tc.want) {
				t.Errorf("containerd tries %v, want %v", got, tc.want)
			}
			mirror := cmp.Or(tc.mirror, testMirror)
			first := readFile(t, path)
			if bytes.Count(first, []byte(`[host."`+mirror)) != 1 || !bytes.Contains(first, []byte(hostsdir.MirrorTable(mirror))) {
				t.Errorf("nodecache's host is missing, duplicated or changed:\n%s", first)
			}
			// No fixture has TLS options but on nodecache's host.
			if bytes.Contains(first, []byte("skip_verify")) {
				t.Errorf("TLS options kept:\n%s", first)
			}
			if tc.existing != "" {
				// Everything but nodecache's table is kept byte for byte,
				// so its table carries nothing else (no TLS options).
				rest, err := hostsdir.Strip(first, mirror)
				if err != nil {
					t.Fatal(err)
				}
				if want, _ := hostsdir.Strip([]byte(tc.existing), mirror); strings.TrimSpace(string(rest)) != strings.TrimSpace(string(want)) {
					t.Errorf("the other content changed:\n%s\nwant:\n%s", rest, want)
				}
				if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
					t.Errorf("mode %v, want the existing 0640 kept", fi.Mode().Perm())
				}
			}

			out = mustRunHosts(t, dir, tc.args...)
			if out != path+": unchanged\n" {
				t.Errorf("second run reported %q, want unchanged", out)
			}
			if second := readFile(t, path); !bytes.Equal(first, second) {
				t.Errorf("second run changed the file:\n%s\nthen:\n%s", first, second)
			}
			if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"hosts.toml"}) {
				t.Errorf("directory holds %v, want hosts.toml alone", names)
			}
		})
	}
}

func TestHostsLeavesAConfiguredFileAlone(t *testing.T) {
	example, err := os.ReadFile("../../hosts.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	writeFile(t, path, string(example))
	if out := mustRunHosts(t, dir, "--registry", "docker.io"); out != path+": unchanged\n" {
		t.Errorf("on hosts.toml.example: %q, want unchanged", out)
	}
	if got := readFile(t, path); !bytes.Equal(got, example) {
		t.Errorf("file rewritten:\n%s", got)
	}
	if got := hostOrder(t, dir, "docker.io"); !slices.Equal(got, []string{testMirror, "https://registry-1.docker.io"}) {
		t.Errorf("containerd tries %v with hosts.toml.example", got)
	}
}

func TestHostsReplaceThenRemoveRestoresTheOriginal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	writeFile(t, path, otherHosts)

	out := mustRunHosts(t, dir, "--registry", "docker.io", "--replace")
	if !strings.Contains(out, "replaced; the original is in "+path+hostsdir.BackupSuffix) {
		t.Errorf("--replace reported %q", out)
	}
	if got, want := readFile(t, path), hostsdir.Fresh("https://registry-1.docker.io", testMirror); !bytes.Equal(got, want) {
		t.Errorf("after --replace:\n%s\nwant:\n%s", got, want)
	}
	if got := hostOrder(t, dir, "docker.io"); !slices.Equal(got, []string{testMirror, "https://registry-1.docker.io"}) {
		t.Errorf("containerd tries %v after --replace", got)
	}
	// A second run keeps the first backup, which holds the original.
	if out := mustRunHosts(t, dir, "--registry", "docker.io", "--replace"); out != path+": unchanged\n" {
		t.Errorf("second --replace reported %q", out)
	}
	mustRunHosts(t, dir, "--registry", "docker.io", "--replace", "--mirror", "http://127.0.0.1:6000")
	if got := readFile(t, path+hostsdir.BackupSuffix); string(got) != otherHosts {
		t.Errorf("backup overwritten:\n%s", got)
	}

	out = mustRunHosts(t, dir, "--registry", "docker.io", "--remove")
	if !strings.Contains(out, "restored from") {
		t.Errorf("--remove reported %q", out)
	}
	if got := readFile(t, path); string(got) != otherHosts {
		t.Errorf("after --remove:\n%s\nwant the original byte for byte", got)
	}
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"hosts.toml"}) {
		t.Errorf("directory holds %v after --remove", names)
	}
	if out := mustRunHosts(t, dir, "--registry", "docker.io", "--remove"); out != path+": unchanged\n" {
		t.Errorf("second --remove reported %q", out)
	}
}

func TestHostsRemove(t *testing.T) {
	dir := t.TempDir()
	merged := filepath.Join(dir, "docker.io", "hosts.toml")
	writeFile(t, merged, otherHosts)
	mustRunHosts(t, dir, "--registry", "docker.io", "--registry", "ghcr.io")
	created := filepath.Join(dir, "ghcr.io", "hosts.toml")
	if _, err := os.Stat(created); err != nil {
		t.Fatal(err)
	}

	out := mustRunHosts(t, dir, "--registry", "docker.io", "--registry", "ghcr.io", "--remove")
	if got := readFile(t, merged); string(got) != otherHosts {
		t.Errorf("merged file after --remove:\n%s\nwant the original", got)
	}
	if _, err := os.Stat(filepath.Dir(created)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the directory nodecache created is still there (%v); output:\n%s", err, out)
	}
	out = mustRunHosts(t, dir, "--registry", "docker.io", "--registry", "ghcr.io", "--remove")
	if want := merged + ": unchanged\n" + created + ": unchanged (absent)\n"; out != want {
		t.Errorf("second --remove reported %q, want %q", out, want)
	}
	if got := readFile(t, merged); string(got) != otherHosts {
		t.Errorf("second --remove changed the file:\n%s", got)
	}
}

func TestHostsRemoveKeepsHostsAddedLater(t *testing.T) {
	dir := t.TempDir()
	mustRunHosts(t, dir, "--registry", "docker.io")
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n[host.\"https://added.example\"]\n")
	f.Close()
	mustRunHosts(t, dir, "--registry", "docker.io", "--remove")
	if got := hostOrder(t, dir, "docker.io"); !slices.Equal(got, []string{"https://added.example", "https://registry-1.docker.io"}) {
		t.Errorf("containerd tries %v, want the added host then upstream", got)
	}
}

func TestHostsRefusesWhatItCannotMerge(t *testing.T) {
	for name, existing := range map[string]string{
		"not TOML":    "[host.\"x\"\n",
		"host array":  "[[host]]\n  capabilities = [\"pull\"]\n",
		"bad value":   "capabilities = [\"fly\"]\n",
		"inline host": "host = { \"https://a.example\" = { capabilities = [\"pull\"] } }\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "docker.io", "hosts.toml")
			writeFile(t, path, existing)
			_, err := runHosts(t, dir, "--registry", "docker.io")
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v, want an error naming %s", err, path)
			}
			if exitCode(err) != 1 {
				t.Errorf("exit status %d, want 1", exitCode(err))
			}
			if got := readFile(t, path); string(got) != existing {
				t.Errorf("file changed to:\n%s", got)
			}
			// --replace is the way out.
			mustRunHosts(t, dir, "--registry", "docker.io", "--replace")
			if got := hostOrder(t, dir, "docker.io"); len(got) != 2 || got[0] != testMirror {
				t.Errorf("containerd tries %v after --replace", got)
			}
		})
	}
}

func TestHostsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{nil, "--registry"},
		{[]string{"--registry", "docker.io/library"}, "--registry"},
		{[]string{"--registry", "https://docker.io"}, "--registry"},
		{[]string{"--registry", ""}, "--registry"},
		{[]string{"--registry", ".."}, "--registry"},
		{[]string{"--registry", "_default"}, "--registry"},
		{[]string{"--registry", "x=ftp://x"}, "--registry"},
		{[]string{"--registry", "x", "--mirror", "ftp://127.0.0.1:5050"}, "--mirror"},
		{[]string{"--registry", "x", "--mirror", "127.0.0.1:5050"}, "--mirror"},
		{[]string{"--registry", "x", "--mirror", "http://127.0.0.1:5050/v2"}, "--mirror"},
		{[]string{"--registry", "x", "--replace", "--remove"}, "--replace"},
		{[]string{"--registry", "x", "--nope"}, "-nope"},
		{[]string{"--registry", "x", "extra"}, "extra"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			_, err := runHosts(t, dir, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.flag) || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %q (exit %d), want one line naming %s, exit 2", err, exitCode(err), tc.flag)
			}
			if names := dirNames(t, dir); len(names) > 0 {
				t.Errorf("wrote %v despite the error", names)
			}
		})
	}
}

// TestHostsFromEnvironment: hosts reads NODECACHE_HOSTS_CMD_<FLAG>, and
// not serve's NODECACHE_<FLAG>, whose --registry means something else.
func TestHostsFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NODECACHE_REGISTRY", "docker.io=https://registry-1.docker.io")
	t.Setenv("NODECACHE_HOSTS_CMD_REGISTRY", "docker.io,ghcr.io")
	t.Setenv("NODECACHE_HOSTS_CMD_MIRROR", "http://127.0.0.1:6000")
	mustRunHosts(t, dir)
	for _, r := range []string{"docker.io", "ghcr.io"} {
		if got := hostOrder(t, dir, r); got[0] != "http://127.0.0.1:6000" {
			t.Errorf("%s: containerd tries %v", r, got)
		}
	}
}

// TestHostsWarns: hosts writes its files whatever containerd's
// configuration says, then warns on stderr of each setting doctor would
// name; with a configuration that uses the directory it says nothing.
func TestHostsWarns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs.d")
	colon := filepath.Join(t.TempDir(), "config.toml")
	conf := "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '" + dir + ":/etc/docker/certs.d'\n"
	if err := os.WriteFile(colon, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		config string
		want   string
	}{
		{colon, `nodecache hosts: warning: plugins."io.containerd.cri.v1.images".registry.config_path: "` + dir + `:/etc/docker/certs.d" is read as one directory`},
		{writeContainerdConfig(t, dir), ""},
		// Nothing to judge: no file and no binary, as in a container
		// that mounts only the hosts directory.
		{filepath.Join(t.TempDir(), "none.toml"), ""},
	} {
		var out, errOut bytes.Buffer
		err := dispatch(context.Background(), []string{"hosts", "--dir", dir, "--registry", "docker.io",
			"--containerd", "", "--containerd-config", tt.config}, &out, &errOut)
		if err != nil {
			t.Fatal(err)
		}
		if got := errOut.String(); (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) || strings.Count(got, "\n") > 1 {
			t.Errorf("stderr %q, want %q", got, tt.want)
		}
		if got := hostOrder(t, dir, "docker.io"); got[0] != defaultMirror {
			t.Errorf("containerd tries %v, want %s first", got, defaultMirror)
		}
	}
}
