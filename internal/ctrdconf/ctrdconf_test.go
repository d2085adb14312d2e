package ctrdconf

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const certsD = "/etc/containerd/certs.d"

var (
	v16 = Version{1, 6}
	v20 = Version{2, 0}
	v24 = Version{2, 4}
)

// edit returns testdata file name with each old string replaced by new,
// failing if one is missing, so a case never tests the file unchanged.
func edit(t *testing.T, name string, pairs ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s has no %q", name, pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return []byte(s)
}

// The real files: the default of Debian's containerd 1.6 (`containerd
// config default`, version 2), the full version 3 configuration from
// containerd 2.x's docs/cri/config.md, and containerd 2.4's own
// `containerd config default` (version 4).
const (
	file16 = "containerd-1.6-default.toml"
	fileV3 = "containerd-2.x-doc-v3.toml"
	file24 = "containerd-2.4-default.toml"
)

const (
	path16 = `config_path = ""`
	pathV3 = `config_path = ''`
	// Key 24 is where the version 4 default has its config_path.
	path24 = `config_path = ''`
)

func TestCheck(t *testing.T) {
	colon := `config_path = "` + LegacyConfigPath + `"`
	one := `config_path = "` + certsD + `"`
	mirrors16 := "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n\n        [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n          endpoint = [\"http://127.0.0.1:5050\"]\n"
	tests := []struct {
		name    string
		file    string
		edits   []string
		version Version
		want    string // the setting of the one problem; "" for none
	}{
		{"1.6 default", file16, nil, v16, `plugins."io.containerd.grpc.v1.cri".registry.config_path`},
		{"1.6 one dir", file16, []string{path16, one}, v16, ""},
		{"1.6 colon", file16, []string{path16, colon}, v16, ""},
		{"1.6 other dir", file16, []string{path16, `config_path = "/etc/docker/certs.d"`}, v16, `registry.config_path`},
		{"1.6 mirrors", file16, []string{"[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n", mirrors16}, v16, `registry.mirrors`},
		{"1.6 mirrors beside config_path", file16, []string{path16, one, "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n", mirrors16}, v16, `registry.mirrors`},
		{"version 2 file on 2.4, colon", file16, []string{path16, colon}, v24, `plugins."io.containerd.grpc.v1.cri".registry.config_path`},
		{"version 2 file on 2.4, one dir", file16, []string{path16, one}, v24, ""},
		{"version 2 file, unknown version, colon", file16, []string{path16, colon}, Version{}, `registry.config_path`},
		{"version 2 file on 2.4, colon, 5 downloads", file16, []string{path16, colon, "max_concurrent_downloads = 3", "max_concurrent_downloads = 5"}, v24, ""},
		{"v3 default on 2.4", fileV3, nil, v24, `plugins."io.containerd.cri.v1.images".registry.config_path`},
		{"v3 default on 2.0", fileV3, nil, v20, ""},
		{"v3 default, unknown version", fileV3, nil, Version{}, `registry.config_path`},
		{"v3 one dir on 2.4", fileV3, []string{pathV3, one}, v24, ""},
		{"v3 colon on 2.4", fileV3, []string{pathV3, colon}, v24, `registry.config_path`},
		{"v3 colon on 2.0", fileV3, []string{pathV3, colon}, v20, ""},
		{"v3 colon, local pull", fileV3, []string{pathV3, colon, "use_local_image_pull = false", "use_local_image_pull = true"}, v24, ""},
		{"v3 colon, snapshot annotations", fileV3, []string{pathV3, colon, "disable_snapshot_annotations = true", "disable_snapshot_annotations = false"}, v24, ""},
		{"v3 other dir", fileV3, []string{pathV3, `config_path = '/srv/certs.d/'`}, v24, `registry.config_path`},
		{"v3 trailing slash", fileV3, []string{pathV3, `config_path = '/etc/containerd/certs.d/'`}, v24, ""},
		{"2.4 default", file24, nil, v24, `plugins."io.containerd.cri.v1.images".registry.config_path`},
		{"2.4 one dir", file24, []string{path24, one}, v24, ""},
		{"2.4 colon", file24, []string{path24, colon}, v24, `registry.config_path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(edit(t, tt.file, tt.edits...))
			if err != nil {
				t.Fatal(err)
			}
			problems := Check(c, tt.version, certsD)
			switch {
			case tt.want == "" && len(problems) > 0:
				t.Fatalf("problems %v, want none", problems)
			case tt.want != "" && (len(problems) != 1 || !strings.HasSuffix(problems[0].Setting, tt.want)):
				t.Fatalf("problems %v, want one of %s", problems, tt.want)
			}
			for _, p := range problems {
				if s := p.String(); strings.Contains(s, "\n") || !strings.Contains(s, "fix: ") {
					t.Errorf("problem %q is not one line with a fix", s)
				}
			}
		})
	}
}

func TestParseVersions(t *testing.T) {
	tests := []struct {
		data      string
		version   int
		table     string
		path      string
		localPull string
	}{
		{"", 1, `plugins."cri".registry`, "", ""},
		{"[plugins.cri.registry]\nconfig_path = \"/a\"\n", 1, `plugins."cri".registry`, "/a", ""},
		{"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/b\"\n", 2, `plugins."io.containerd.grpc.v1.cri".registry`, "/b", ""},
		// A version 3 file's old CRI table is not where containerd 2.0 to
		// 2.2 read registries (2.3 and later migrate it; see Parse).
		{"version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/b\"\n", 3, `plugins."io.containerd.cri.v1.images".registry`, "", ""},
		{"version = 4\n[plugins.'io.containerd.cri.v1.images']\nuse_local_image_pull = true\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/c'\n", 4, `plugins."io.containerd.cri.v1.images".registry`, "/c", "use_local_image_pull = true"},
		{"version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.configs.'x.io'.tls]\ninsecure_skip_verify = true\n", 3, `plugins."io.containerd.cri.v1.images".registry`, "", "registry.configs"},
		// As containerd 2.4.2's dump shows: the snapshot settings of a
		// version 2 file migrate only beside a runtimes table.
		{"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndisable_snapshot_annotations = false\n", 2, `plugins."io.containerd.grpc.v1.cri".registry`, "", ""},
		{"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndisable_snapshot_annotations = false\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n", 2, `plugins."io.containerd.grpc.v1.cri".registry`, "", "disable_snapshot_annotations = false"},
	}
	for _, tt := range tests {
		c, err := Parse([]byte(tt.data))
		if err != nil {
			t.Fatalf("%q: %v", tt.data, err)
		}
		if c.Version != tt.version || c.Table != tt.table || c.ConfigPath != tt.path || c.LocalPull != tt.localPull {
			t.Errorf("%q: got %+v", tt.data, c)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, data := range []string{"version = [", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = 3\n"} {
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: err %v, want ErrConfig", data, err)
		}
	}
}

func TestReadFileMissingIsDefaults(t *testing.T) {
	for _, tt := range []struct {
		v     Version
		table string
	}{
		{v24, `plugins."io.containerd.cri.v1.images".registry`},
		{v16, `plugins."io.containerd.grpc.v1.cri".registry`},
		{Version{}, `plugins."io.containerd.grpc.v1.cri".registry`},
	} {
		c, err := ReadFile(filepath.Join(t.TempDir(), "none.toml"), tt.v)
		if err != nil || c.ConfigPath != "" || c.Table != tt.table {
			t.Fatalf("%v: %+v, %v", tt.v, c, err)
		}
		if p := Check(c, tt.v, certsD); len(p) != 1 {
			t.Fatalf("containerd %v with no file: %v, want the config_path problem", tt.v, p)
		}
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		out  string
		want Version
	}{
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", Version{1, 6}},
		{"containerd github.com/containerd/containerd/v2 v2.4.2 abcdef\n", Version{2, 4}},
		{"containerd containerd.io 1.7.27 05044ec\n", Version{1, 7}},
	}
	for _, tt := range tests {
		if got, err := ParseVersion(tt.out); err != nil || got != tt.want {
			t.Errorf("%q: %v, %v; want %v", tt.out, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "ctr 1.6", "containerd x vX.Y", "containerd x 0.1", "containerd x 1.-1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// realBinaries are the containerd binaries on this machine to test
// against: Debian's 1.6 at /usr/bin/containerd, and a 2.x binary named by
// NODECACHE_TEST_CONTAINERD2 (the e2e setup builds one from the module
// proxy). The test skips if there is none.
func realBinaries(t *testing.T) []string {
	var bins []string
	for _, b := range []string{"/usr/bin/containerd", os.Getenv("NODECACHE_TEST_CONTAINERD2")} {
		if b == "" {
			continue
		}
		if _, err := exec.LookPath(b); err == nil {
			bins = append(bins, b)
		}
	}
	if len(bins) == 0 {
		t.Skip("no containerd binary: install Debian's containerd, or set NODECACHE_TEST_CONTAINERD2")
	}
	return bins
}

// TestRealContainerdDump runs the real `containerd config dump`, with no
// daemon, over a version 2 file, as doctor does: the binary migrates the
// file (2.x) or fills in its defaults (1.x), and Check judges the dump by
// the binary's release. A colon-separated config_path is fine on 1.x and
// a problem on 2.1 and later. (It replaces a test of the 1.6 binary alone
// and keeps its checks.)
func TestRealContainerdDump(t *testing.T) {
	for _, bin := range realBinaries(t) {
		t.Run(bin, func(t *testing.T) {
			ctx := context.Background()
			v, err := BinaryVersion(ctx, bin, 0)
			if err != nil || !v.Known() {
				t.Fatalf("version %v, %v", v, err)
			}
			file := filepath.Join(t.TempDir(), "config.toml")
			colon := `config_path = "/srv/hosts:/etc/docker/certs.d"`
			if err := os.WriteFile(file, edit(t, file16, path16, colon), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := Dump(ctx, bin, file, 0)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			if c.ConfigPath != "/srv/hosts:/etc/docker/certs.d" {
				t.Fatalf("dump read as %+v", c)
			}
			problems := Check(c, v, "/srv/hosts")
			if want := v.atLeast(2, 1); (len(problems) == 1) != want || len(problems) > 1 {
				t.Fatalf("containerd %v: problems %v, want one: %v", v, problems, want)
			}
			// 1.x refuses to dump a missing file, 2.x dumps its defaults;
			// doctor reads a missing file as the defaults itself.
			_, err = Dump(ctx, bin, filepath.Join(t.TempDir(), "missing.toml"), 0)
			if (err != nil) != (v.Major == 1) {
				t.Fatalf("containerd %v, dump of a missing file: %v", v, err)
			}
		})
	}
}

// TestDumpTimeout: a binary that never answers is given up on.
func TestDumpTimeout(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "containerd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec tail -f /dev/null\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Dump(context.Background(), bin, "/dev/null", 50e6)
	if err == nil || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("err %v, want a timeout", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{file16, fileV3} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"a\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		for _, v := range []Version{{}, v16, v20, v24} {
			for _, p := range Check(c, v, certsD) {
				if p.Setting == "" || p.Fix == "" {
					t.Fatalf("problem without setting or fix: %+v", p)
				}
			}
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Add("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n")
	f.Add("containerd github.com/containerd/containerd/v2 2.4.2+unknown \n")
	f.Fuzz(func(t *testing.T, out string) {
		v, err := ParseVersion(out)
		if err == nil && (!v.Known() || v.Major < 1 || v.Minor < 0) {
			t.Fatalf("ParseVersion(%q) = %+v without an error", out, v)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("error %q is not one line", err)
		}
	})
}
