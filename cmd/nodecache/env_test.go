package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"nodecache/internal/settings"
)

// commandFlags builds every command's flag set with the environment
// prefix it reads.
func commandFlags() map[string]struct {
	fs  *flag.FlagSet
	env settings.Env
} {
	serve, _ := serveFlags()
	hosts, _ := hostsFlags()
	verify, _ := verifyFlags()
	return map[string]struct {
		fs  *flag.FlagSet
		env settings.Env
	}{
		"serve":  {serve, serveEnv},
		"hosts":  {hosts, hostsEnv},
		"verify": {verify, verifyEnv},
	}
}

// TestNoVariableMeansTwoThings: no environment variable is read by two
// commands with different meanings. The one share allowed is the data
// directory of serve and verify, which is the same store.
func TestNoVariableMeansTwoThings(t *testing.T) {
	allowed := map[string]bool{"NODECACHE_DATA_DIR": true}
	readers := map[string][]string{} // variable -> "command --flag"
	for cmd, c := range commandFlags() {
		c.fs.VisitAll(func(f *flag.Flag) {
			name := c.env.Name(f.Name)
			readers[name] = append(readers[name], cmd+" --"+f.Name)
		})
	}
	if len(readers) < 25 {
		t.Fatalf("only %d variables: the flag sets were not read", len(readers))
	}
	for name, by := range readers {
		if len(by) > 1 && !allowed[name] {
			t.Errorf("%s is read by %s", name, strings.Join(by, " and "))
		}
	}
	if by := readers["NODECACHE_DATA_DIR"]; len(by) != 2 {
		t.Errorf("NODECACHE_DATA_DIR is read by %v, want serve and verify", by)
	}
	for _, name := range []string{"REGISTRY", "MIRROR", "DIR", "ALL", "REPLACE", "REMOVE"} {
		if by := readers["NODECACHE_HOSTS_CMD_"+name]; len(by) != 1 || !strings.HasPrefix(by[0], "hosts ") {
			t.Errorf("NODECACHE_HOSTS_CMD_%s is read by %v, want hosts", name, by)
		}
	}
}

// TestHostsVariablesLeaveServeAlone: docs/configuration.md's hosts example in the
// environment does not change, or break, serve's settings.
func TestHostsVariablesLeaveServeAlone(t *testing.T) {
	want, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODECACHE_HOSTS_CMD_REGISTRY", "docker.io,ghcr.io")
	t.Setenv("NODECACHE_HOSTS_CMD_DIR", "/nonexistent")
	t.Setenv("NODECACHE_HOSTS_CMD_MIRROR", "http://127.0.0.1:6000")
	cfg, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatalf("serve with hosts' variables set: %v", err)
	}
	if len(cfg.Registries) != 0 || strings.Join(cfg.AllowRegistries, ",") != strings.Join(want.AllowRegistries, ",") {
		t.Errorf("serve read hosts' variables: registries %v, allow %v", cfg.Registries, cfg.AllowRegistries)
	}
	// And the other way round: hosts reads no NODECACHE_<FLAG> variable.
	t.Setenv("NODECACHE_REGISTRY", "docker.io=https://registry-1.docker.io")
	t.Setenv("NODECACHE_MIRROR", "ftp://not-a-mirror")
	opts, err := parseHosts(nil, io.Discard)
	if err != nil {
		t.Fatalf("hosts with NODECACHE_* variables set: %v", err)
	}
	if opts.mirror != "http://127.0.0.1:6000" || len(opts.targets) != 2 || opts.targets[1].name != "ghcr.io" {
		t.Errorf("hosts options %+v, want NODECACHE_HOSTS_CMD_* alone", opts)
	}
}

// TestHelpNamesEachCommandsVariables: --help shows the variable each
// command really reads.
func TestHelpNamesEachCommandsVariables(t *testing.T) {
	for cmd, want := range map[string]string{
		"serve":  "env NODECACHE_DATA_DIR",
		"hosts":  "env NODECACHE_HOSTS_CMD_REGISTRY",
		"verify": "env NODECACHE_DATA_DIR",
	} {
		var out strings.Builder
		err := dispatch(t.Context(), []string{cmd, "--help"}, io.Discard, &out)
		if err != flag.ErrHelp || !strings.Contains(out.String(), want) {
			t.Errorf("%s --help: %v, want %q in:\n%s", cmd, err, want, out.String())
		}
	}
}

// TestHostsNamesTheOldVariables: hosts carries on when NODECACHE_<FLAG>
// variables of its own flags are set, but says on stderr, one line each,
// that they are ignored and which variable to set instead. serve's
// NODECACHE_REGISTRY is not named: it is serve's, not an old name.
func TestHostsNamesTheOldVariables(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]string{
		"NODECACHE_REGISTRY": "docker.io=https://registry-1.docker.io",
		"NODECACHE_DIR":      "/nonexistent",
		"NODECACHE_MIRROR":   "http://127.0.0.1:6000",
		"NODECACHE_ALL":      "true",
		"NODECACHE_REPLACE":  "true",
		"NODECACHE_REMOVE":   "true",
	} {
		t.Setenv(name, v)
	}
	t.Setenv("NODECACHE_HOSTS_CMD_REGISTRY", "ghcr.io")
	// A containerd configuration that uses dir, so that hosts has no
	// warning of its own to add to stderr.
	t.Setenv("NODECACHE_HOSTS_CMD_CONTAINERD", "")
	t.Setenv("NODECACHE_HOSTS_CMD_CONTAINERD_CONFIG", writeContainerdConfig(t, dir))
	var out, errOut strings.Builder
	if err := dispatch(t.Context(), []string{"hosts", "--dir", dir}, &out, &errOut); err != nil {
		t.Fatalf("hosts with old variables set: %v", err)
	}
	var want []string
	for _, name := range []string{"ALL", "DIR", "MIRROR", "REMOVE", "REPLACE"} {
		want = append(want, "nodecache hosts: NODECACHE_"+name+" is ignored; set NODECACHE_HOSTS_CMD_"+name)
	}
	if got := strings.TrimSuffix(errOut.String(), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// It carried on with its own variables alone: one file, written (not
	// removed), for the default mirror.
	if got := hostOrder(t, dir, "ghcr.io"); got[0] != defaultMirror {
		t.Errorf("ghcr.io: containerd tries %v, want %s first", got, defaultMirror)
	}
	if !strings.Contains(out.String(), "ghcr.io") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("stdout %q, want one line for ghcr.io", out.String())
	}

	// Without old names set, stderr stays quiet.
	for _, name := range []string{"ALL", "DIR", "MIRROR", "REMOVE", "REPLACE"} {
		os.Unsetenv("NODECACHE_" + name)
	}
	errOut.Reset()
	if err := dispatch(t.Context(), []string{"hosts", "--dir", dir}, io.Discard, &errOut); err != nil || errOut.Len() != 0 {
		t.Errorf("hosts without old variables: %v, stderr %q", err, errOut.String())
	}
}
