package hostsdir

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// order returns the hosts Load finds for registry, as scheme://host.
func order(t *testing.T, dir, registry string) []string {
	t.Helper()
	hosts, err := Load(context.Background(), dir, registry)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hosts {
		out = append(out, h.Scheme+"://"+h.Host)
	}
	return out
}

// TestWriteThenLoad: what Write writes, containerd's loader reads with
// nodecache first; Remove takes it back to containerd's default.
func TestWriteThenLoad(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, registry string
		want           []string
	}{
		{"ghcr.io", "ghcr.io", []string{testMirror, "https://ghcr.io"}},
		{"docker.io", "docker.io", []string{testMirror, "https://registry-1.docker.io"}},
		{DefaultName, "quay.io", []string{testMirror, "https://quay.io"}},
	} {
		server := Server(tc.name)
		if tc.name == DefaultName {
			server = ""
		}
		path := Path(dir, tc.name)
		if got, err := Write(path, server, testMirror, false); err != nil || got != "created" {
			t.Fatalf("Write %s = %q, %v", tc.name, got, err)
		}
		if got := order(t, dir, tc.registry); !slices.Equal(got, tc.want) {
			t.Errorf("%s: containerd tries %v, want %v", tc.name, got, tc.want)
		}
		if got, err := Write(path, server, testMirror, false); err != nil || got != "unchanged" {
			t.Errorf("second Write %s = %q, %v", tc.name, got, err)
		}
	}
	for _, name := range []string{"ghcr.io", "docker.io", DefaultName} {
		if got, err := Remove(Path(dir, name), testMirror); err != nil || got != "removed with its directory" {
			t.Errorf("Remove %s = %q, %v", name, got, err)
		}
	}
	if got := order(t, dir, "ghcr.io"); !slices.Equal(got, []string{"https://ghcr.io"}) {
		t.Errorf("after Remove containerd tries %v", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind %v", entries)
	}
}

// TestCheckRefusesWhatContainerdWouldNotUse: each mistake is named.
func TestCheckRefusesWhatContainerdWouldNotUse(t *testing.T) {
	table := MirrorTable(testMirror)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not TOML", "[host.\"x\"\n", "containerd would ignore the file"},
		{"not first", "[host.\"https://a\"]\n\n" + table, "would not try " + testMirror + " first"},
		{"no fallback", "server = \"" + testMirror + "\"\n\n" + table, "no fallback"},
		{"bad capability", table + "\n[host.\"https://a\"]\n  capabilities = [\"fly\"]\n", "unknown capability"},
		{"bad dial timeout", table + "\n[host.\"https://a\"]\n  dial_timeout = \"soon\"\n", "dial_timeout"},
		{"TLS on nodecache", table + "  skip_verify = true\n", "no TLS options"},
		{"push on nodecache", "[host.\"" + testMirror + "\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "capabilities pull and resolve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check([]byte(tc.file), testMirror)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := Check(Fresh("https://ghcr.io", testMirror), testMirror); err != nil {
		t.Errorf("Check(Fresh) = %v", err)
	}
}

// TestWriteKeepsTheBackupRemoveRestores: replace keeps the original once,
// without nodecache's host, and Remove puts it back.
func TestWriteKeepsTheBackupRemoveRestores(t *testing.T) {
	path := Path(t.TempDir(), "docker.io")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	original := "server = \"https://registry-1.docker.io\"\n"
	if err := os.WriteFile(path, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Write(path, Server("docker.io"), testMirror, false); err != nil || !strings.HasPrefix(got, "updated") {
		t.Fatalf("merge = %q, %v", got, err)
	}
	if got, err := Write(path, Server("docker.io"), testMirror, true); err != nil || got != "replaced; the original is in "+path+BackupSuffix {
		t.Fatalf("replace = %q, %v", got, err)
	}
	if b, _ := os.ReadFile(path + BackupSuffix); string(b) != original {
		t.Errorf("backup holds %q, want the original without nodecache's host", b)
	}
	if fi, _ := os.Stat(path + BackupSuffix); fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want the original's 0600", fi.Mode().Perm())
	}
	if got, err := Remove(path, testMirror); err != nil || got != "restored from "+path+BackupSuffix {
		t.Fatalf("Remove = %q, %v", got, err)
	}
	if b, _ := os.ReadFile(path); string(b) != original {
		t.Errorf("after Remove: %q", b)
	}
}
