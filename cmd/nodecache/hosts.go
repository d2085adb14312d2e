package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"nodecache/internal/atomicfile"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

const (
	// defaultHostsDir is where containerd's packaged configurations and
	// most Kubernetes installers point config_path.
	defaultHostsDir = "/etc/containerd/certs.d"
	// defaultMirror is nodecache's default --listen address.
	defaultMirror = "http://127.0.0.1:5050"
	// hostsMarker opens every file nodecache creates, so that --remove can
	// tell its own files, which it deletes, from files it merged into.
	hostsMarker = "# Written by `nodecache hosts`"
	// backupSuffix names the copy --replace keeps of the file it replaces.
	backupSuffix = ".nodecache-backup"
	// defaultHostsName is containerd's directory for every registry that
	// has no directory of its own.
	defaultHostsName = "_default"
)

// errCannotMerge is returned when an existing hosts.toml cannot take
// nodecache's host table; --replace is the way out.
var errCannotMerge = errors.New("cannot add nodecache's host to it; fix it or use --replace")

// hostsTarget is one hosts.toml to write: the directory name under --dir
// and the upstream endpoint for its server line ("" for _default).
type hostsTarget struct {
	name, server string
}

// hostsOptions is what `nodecache hosts` was asked to do.
type hostsOptions struct {
	dir     string
	targets []hostsTarget
	mirror  string // scheme://host[:port], no trailing slash
	replace bool
	remove  bool
}

// hosts writes, or with --remove undoes, containerd hosts.toml files that
// put nodecache in front of registries.
func hosts(args []string, stdout, stderr io.Writer) error {
	opts, err := parseHosts(args, stderr)
	if err != nil {
		return err
	}
	for _, t := range opts.targets {
		path := filepath.Join(opts.dir, t.name, "hosts.toml")
		var result string
		if opts.remove {
			result, err = removeHosts(path, opts.mirror)
		} else {
			result, err = writeHosts(path, t, opts.mirror, opts.replace)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", path, result)
	}
	return nil
}

func parseHosts(args []string, stderr io.Writer) (hostsOptions, error) {
	fs := flag.NewFlagSet("hosts", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts := hostsOptions{}
	var registries listFlag
	fs.StringVar(&opts.dir, "dir", defaultHostsDir, "containerd's hosts directory (its config_path)")
	fs.Var(&registries, "registry", "registry to mirror: NAME, or NAME=URL to name its endpoint. Repeatable")
	all := fs.Bool("all", false, "mirror every registry, through DIR/_default/hosts.toml")
	mirror := fs.String("mirror", defaultMirror, "nodecache's URL as containerd reaches it")
	fs.BoolVar(&opts.replace, "replace", false, "replace an existing hosts.toml, keeping a copy as hosts.toml"+backupSuffix)
	fs.BoolVar(&opts.remove, "remove", false, "undo: restore the copy --replace kept, or take nodecache's host out")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stderr)
			usage(fs, "nodecache hosts --registry NAME [--registry NAME...] [--all] [--dir DIR] [--mirror URL] [--replace|--remove]")()
			return opts, err
		}
		return opts, usagef("%v", err)
	}
	if err := applyEnv(fs); err != nil {
		return opts, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return opts, usagef("hosts: unexpected argument %q", fs.Arg(0))
	}
	if len(registries.values) == 0 && !*all {
		return opts, usagef("--registry: name at least one registry, or give --all")
	}
	if opts.dir == "" {
		return opts, usagef("--dir: must not be empty")
	}
	if opts.replace && opts.remove {
		return opts, usagef("--replace: cannot be combined with --remove")
	}
	m, err := parseMirror(*mirror)
	if err != nil {
		return opts, err
	}
	opts.mirror = m
	for _, r := range registries.values {
		t, err := parseHostsTarget(r)
		if err != nil {
			return opts, err
		}
		opts.targets = append(opts.targets, t)
	}
	if *all {
		opts.targets = append(opts.targets, hostsTarget{name: defaultHostsName})
	}
	return opts, nil
}

// parseMirror checks --mirror and returns it as scheme://host[:port].
// nodecache serves /v2/ at its root, so a path would only break the URLs
// containerd builds.
func parseMirror(v string) (string, error) {
	if err := checkEndpoint(v); err != nil {
		return "", usagef("--mirror %q: %v", v, err)
	}
	u, _ := url.Parse(v)
	if (u.Path != "" && u.Path != "/") || u.User != nil {
		return "", usagef("--mirror %q: want scheme://host:port only, without a path or user", v)
	}
	return u.Scheme + "://" + u.Host, nil
}

// parseHostsTarget parses one --registry value: NAME or NAME=URL.
func parseHostsTarget(v string) (hostsTarget, error) {
	name, endpoint, explicit := strings.Cut(v, "=")
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\ \t\r\n\x00") {
		return hostsTarget{}, usagef("--registry %q: want a registry host such as docker.io or localhost:5000, without a scheme or path", v)
	}
	if name == defaultHostsName {
		return hostsTarget{}, usagef("--registry %q: use --all to mirror every registry", v)
	}
	if !explicit {
		return hostsTarget{name: name, server: upstreamServer(name)}, nil
	}
	if err := checkEndpoint(endpoint); err != nil {
		return hostsTarget{}, usagef("--registry %q: %v", v, err)
	}
	return hostsTarget{name: name, server: strings.TrimSuffix(endpoint, "/")}, nil
}

// upstreamServer is the endpoint containerd itself uses for a registry.
func upstreamServer(name string) string {
	if name == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}

// writeHosts makes path send pulls to mirror first and reports what it did.
func writeHosts(path string, t hostsTarget, mirror string, replace bool) (string, error) {
	fresh := freshHosts(t.server, mirror)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		return "created", writeChecked(path, fresh, 0o644, mirror)
	case err != nil:
		return "", err
	}
	perm := filePerm(path)
	if !replace {
		// A file that already sends pulls to mirror first is left as it
		// is, with whatever comments or settings were added to its table.
		if checkHostsFile(old, mirror) == nil {
			return "unchanged", nil
		}
		merged, err := mergeHosts(old, mirror)
		if err != nil {
			return "", err
		}
		return "updated: nodecache's host put first, the others kept", replaceFile(path, merged, perm)
	}
	if bytes.Equal(fresh, old) {
		return "unchanged", nil
	}
	result := "replaced"
	if !bytes.HasPrefix(old, []byte(hostsMarker)) {
		backup := path + backupSuffix
		if _, err := os.Stat(backup); errors.Is(err, fs.ErrNotExist) {
			// The backup is what --remove restores, so it should not
			// carry nodecache's host from an earlier merge.
			original, err := stripMirror(old, mirror)
			if err != nil {
				original = old
			}
			if err := replaceFile(backup, original, perm); err != nil {
				return "", err
			}
			result = "replaced; the original is in " + backup
		}
	}
	return result, writeChecked(path, fresh, 0o644, mirror)
}

// removeHosts undoes writeHosts for path and reports what it did.
func removeHosts(path, mirror string) (string, error) {
	backup := path + backupSuffix
	if _, err := os.Stat(backup); err == nil {
		if err := os.Rename(backup, path); err != nil {
			return "", err
		}
		return "restored from " + backup, atomicfile.SyncDir(filepath.Dir(path))
	}
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "unchanged (absent)", nil
	}
	if err != nil {
		return "", err
	}
	rest, err := stripMirror(old, mirror)
	if err != nil {
		return "", err
	}
	if bytes.HasPrefix(old, []byte(hostsMarker)) && !hasHostTables(rest) {
		if err := os.Remove(path); err != nil {
			return "", err
		}
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			return "", err
		}
		// Only succeeds if nothing else (certificates, say) is left.
		if os.Remove(filepath.Dir(path)) == nil {
			return "removed with its directory", nil
		}
		return "removed", nil
	}
	if bytes.Equal(rest, old) {
		return "unchanged", nil
	}
	return "nodecache's host taken out", replaceFile(path, rest, filePerm(path))
}

// writeChecked writes data to path after checking that containerd reads it
// with mirror as the first host.
func writeChecked(path string, data []byte, perm fs.FileMode, mirror string) error {
	if err := checkHostsFile(data, mirror); err != nil {
		return err
	}
	return replaceFile(path, data, perm)
}

// hostFileConfig is the shape containerd v2 decodes a host table, and the
// file's top level, into (core/remotes/docker/config). containerd ignores
// a file that does not decode into it.
type hostFileConfig struct {
	Capabilities []string       `toml:"capabilities"`
	CACert       any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
}

// checkHostsFile decodes data as containerd v2's hosts.toml loader does and
// checks what containerd would try: mirror first, for pull and resolve
// only, with no TLS options, and a fallback after it. It reads none of the
// certificate files the file names: a certificate that is missing now is
// no reason to refuse, and relative paths would resolve elsewhere.
func checkHostsFile(data []byte, mirror string) error {
	var c struct {
		hostFileConfig
		Server      string                    `toml:"server"`
		HostConfigs map[string]hostFileConfig `toml:"host"`
	}
	if err := toml.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("containerd would ignore the file: %w", err)
	}
	tables, err := tableHeaders(data)
	if err != nil {
		return err
	}
	var order []string
	for _, t := range tables {
		if h, ok := t.isHost(); ok && (len(order) == 0 || order[len(order)-1] != h) {
			order = append(order, h)
		}
	}
	if len(order) == 0 || order[0] != mirror {
		return fmt.Errorf("containerd would not try %s first (hosts in order: %v)", mirror, order)
	}
	if c.Server == mirror {
		return fmt.Errorf("no fallback: server is nodecache itself")
	}
	for _, h := range order {
		if err := checkHostConfig(h, c.HostConfigs[h]); err != nil {
			return fmt.Errorf("[host.%s]: %w", tomlString(h), err)
		}
	}
	if err := checkHostConfig(c.Server, c.hostFileConfig); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	m := c.HostConfigs[mirror]
	if strings.Join(m.Capabilities, ",") != "pull,resolve" || m.CACert != nil || m.Client != nil || m.SkipVerify != nil {
		return fmt.Errorf("[host.%s] must have capabilities pull and resolve and no TLS options", tomlString(mirror))
	}
	return nil
}

// checkHostConfig checks what containerd checks of one host while parsing.
func checkHostConfig(server string, h hostFileConfig) error {
	if server != "" {
		if !strings.HasPrefix(server, "http") {
			server = "https://" + server
		}
		if _, err := url.Parse(server); err != nil {
			return err
		}
	}
	for _, c := range h.Capabilities {
		switch strings.ToLower(c) {
		case "pull", "resolve", "push", "referrers":
		default:
			return fmt.Errorf("unknown capability %q", c)
		}
	}
	if h.DialTimeout != "" {
		if _, err := time.ParseDuration(h.DialTimeout); err != nil {
			return fmt.Errorf("dial_timeout: %w", err)
		}
	}
	return nil
}

// replaceFile replaces path with data durably: a crash leaves the old
// file or the new one, and never a torn one.
func replaceFile(path string, data []byte, perm fs.FileMode) error {
	if err := atomicfile.Write("", path, data, perm); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// filePerm returns path's permission bits, or 0644 if it cannot be read.
func filePerm(path string) fs.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0o644
	}
	return fi.Mode().Perm()
}
