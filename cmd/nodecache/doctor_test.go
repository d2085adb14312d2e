package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nodecache/internal/daemontest"
)

// startNodecache runs the real nodecache on 127.0.0.1 until the test
// ends and returns its URL, as doctor's --mirror takes it.
func startNodecache(t *testing.T) string {
	t.Helper()
	return daemontest.MustStart(t, daemontest.Binary(t), "--data-dir", t.TempDir()).URL
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func runDoctor(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := dispatch(context.Background(), append([]string{"doctor"}, args...), &out, &errOut)
	return out.String(), err
}

func problemLines(out string) []string {
	var lines []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "problem: ") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestDoctor runs doctor over a containerd 2.x configuration file, a
// hosts directory written by `nodecache hosts`, and a mirror that is up
// or down: each problem is one line naming its setting, and any problem
// makes it exit 1 unless --report-only.
func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	hostsDir := filepath.Join(dir, "certs.d")
	mirror := startNodecache(t)
	mustRunHosts(t, hostsDir, "--registry", "docker.io", "--registry", "quay.io", "--mirror", mirror)
	good := "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '" + hostsDir + "'\n"
	unset := "version = 3\n"
	tests := []struct {
		name   string
		config string
		mirror string
		extra  []string
		want   []string // the settings named, in order
		exit   int
	}{
		{"all good", good, mirror, nil, nil, 0},
		{"config_path unset", unset, mirror, nil, []string{`plugins."io.containerd.cri.v1.images".registry.config_path`}, 1},
		{"registry without hosts.toml", good, mirror, []string{"--registry", "ghcr.io"}, []string{filepath.Join(hostsDir, "ghcr.io", "hosts.toml")}, 1},
		{"mirror down", good, "http://" + closedAddr(t), nil, []string{filepath.Join(hostsDir, "docker.io", "hosts.toml"), filepath.Join(hostsDir, "quay.io", "hosts.toml"), "--mirror http://"}, 1},
		{"report only", unset, mirror, []string{"--report-only"}, []string{`plugins."io.containerd.cri.v1.images".registry.config_path`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(file, []byte(tt.config), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--containerd", "", "--containerd-config", file, "--hosts-dir", hostsDir,
				"--mirror", tt.mirror, "--registry", "docker.io", "--registry", "quay.io"}, tt.extra...)
			out, err := runDoctor(t, args...)
			if got := exitOf(err); got != tt.exit {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", got, err, tt.exit, out)
			}
			lines := problemLines(out)
			if len(lines) != len(tt.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(lines), len(tt.want), out)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], "problem: "+w) || !strings.Contains(lines[i], "; fix: ") {
					t.Errorf("line %q, want it to name %s and a fix", lines[i], w)
				}
			}
			if tt.exit == 0 && len(tt.want) == 0 && !strings.Contains(out, "ok: ") {
				t.Errorf("no ok line:\n%s", out)
			}
		})
	}
}

// TestDoctorWithDebianContainerd reads the configuration through the
// real `containerd config dump` of Debian's containerd 1.6, which needs
// no running daemon: on 1.x a colon-separated config_path works.
func TestDoctorWithDebianContainerd(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/containerd"); err != nil {
		t.Skip("no /usr/bin/containerd (Debian's containerd package)")
	}
	hostsDir := filepath.Join(t.TempDir(), "certs.d")
	mirror := startNodecache(t)
	mustRunHosts(t, hostsDir, "--registry", "docker.io", "--mirror", mirror)
	file := filepath.Join(t.TempDir(), "config.toml")
	conf := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"" + hostsDir + ":/etc/docker/certs.d\"\n"
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runDoctor(t, "--containerd", "/usr/bin/containerd", "--containerd-config", file,
		"--hosts-dir", hostsDir, "--mirror", mirror, "--registry", "docker.io")
	if err != nil || !strings.Contains(out, "config dump") || !strings.Contains(out, "containerd 1.") {
		t.Fatalf("%v:\n%s", err, out)
	}
	// Without the binary the version is unknown, and the same file is a
	// problem on containerd 2.1 and later.
	out, err = runDoctor(t, "--containerd", "", "--containerd-config", file,
		"--hosts-dir", hostsDir, "--mirror", mirror, "--registry", "docker.io")
	if exitOf(err) != 1 || len(problemLines(out)) != 1 {
		t.Fatalf("%v:\n%s", err, out)
	}
}

func TestDoctorBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--mirror", "ftp://x"},
		{"--registry", "a/b"},
		{"--hosts-dir", ""},
		{"--containerd-config", ""},
		{"--probe-timeout", "soon"},
		{"extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, err := runDoctor(t, args...)
			if exitOf(err) != 2 || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line and exit 2", err)
			}
			if name := strings.TrimPrefix(args[0], "--"); name != "extra" && !strings.Contains(err.Error(), name) {
				t.Fatalf("err %v does not name %s", err, args[0])
			}
		})
	}
}

// writeContainerdConfig writes a containerd 2.x config.toml whose
// config_path is hostsDir and returns its path.
func writeContainerdConfig(t *testing.T, hostsDir string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.toml")
	conf := "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '" + hostsDir + "'\n"
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
