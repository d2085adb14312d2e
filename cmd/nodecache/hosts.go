package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
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
		return "updated: nodecache's host put first, the others kept", writeFileAtomic(path, merged, perm)
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
			if err := writeFileAtomic(backup, original, perm); err != nil {
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
		return "restored from " + backup, syncDir(filepath.Dir(path))
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
		if err := syncDir(filepath.Dir(path)); err != nil {
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
	return "nodecache's host taken out", writeFileAtomic(path, rest, filePerm(path))
}

// freshHosts is the hosts.toml for a registry without one. server is the
// upstream endpoint; empty for _default, where containerd falls back to the
// registry being pulled from.
func freshHosts(server, mirror string) []byte {
	var b strings.Builder
	b.WriteString(hostsMarker + "; `nodecache hosts --remove` deletes it.\n")
	b.WriteString("# containerd tries the [host] tables in order, then the registry itself,\n")
	b.WriteString("# so a node never depends on its cache to pull.\n\n")
	if server != "" {
		b.WriteString("server = " + tomlString(server) + "\n\n")
	} else {
		b.WriteString("# No server: the fallback is the registry named in the image reference.\n\n")
	}
	b.WriteString(mirrorTable(mirror))
	return []byte(b.String())
}

// mirrorTable is nodecache's host table. It never carries TLS options: on a
// plain-http host, containerd would take ca or skip_verify as a reason to
// try HTTPS first.
func mirrorTable(mirror string) string {
	return "[host." + tomlString(mirror) + "]\n" +
		"  # nodecache, tried first; it serves pulls only.\n" +
		"  capabilities = [\"pull\", \"resolve\"]\n"
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlTable is the header of a [table] or [[array table]] in a file.
type tomlTable struct {
	// start is the offset of the line that holds the header, or of the
	// comment lines right above it, which describe it.
	start int
	key   []string // the header's dotted key, unquoted
}

// isHost reports whether the table is a host or one of its subtables, and
// which host.
func (t tomlTable) isHost() (string, bool) {
	if len(t.key) >= 2 && t.key[0] == "host" {
		return t.key[1], true
	}
	return "", false
}

// tableHeaders parses b and returns its table headers in file order. TOML
// puts every header on a line of its own, so the lines from one table's
// start to the next one's belong to the first.
func tableHeaders(b []byte) ([]tomlTable, error) {
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	var p unstable.Parser
	p.Reset(b)
	var tables []tomlTable
	prevEnd := 0 // where the last expression ended
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table && e.Kind != unstable.ArrayTable && e.Kind != unstable.KeyValue {
			continue
		}
		t := tomlTable{start: -1}
		end := 0
		for it := e.Key(); it.Next(); {
			n := it.Node()
			if t.start < 0 {
				t.start = lineStart(b, int(n.Raw.Offset))
			}
			t.key = append(t.key, string(n.Data))
			end = int(n.Raw.Offset + n.Raw.Length)
		}
		if e.Kind == unstable.KeyValue {
			prevEnd = int(e.Raw.Offset + e.Raw.Length)
			continue
		}
		t.start = commentsAbove(b, t.start, prevEnd)
		prevEnd = end
		tables = append(tables, t)
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	return tables, nil
}

// lineStart returns the offset of the line that holds offset i.
func lineStart(b []byte, i int) int {
	return bytes.LastIndexByte(b[:i], '\n') + 1
}

// commentsAbove moves start, the start of a header line, up over the
// comment lines right above it, staying on lines after the one where the
// previous expression ended (a multi-line string may hold a '#').
func commentsAbove(b []byte, start, prevEnd int) int {
	limit := 0
	if prevEnd > 0 {
		limit = len(b)
		if i := bytes.IndexByte(b[prevEnd:], '\n'); i >= 0 {
			limit = prevEnd + i + 1
		}
	}
	for start > limit {
		above := lineStart(b, start-1)
		if above < limit || !bytes.HasPrefix(bytes.TrimSpace(b[above:start]), []byte("#")) {
			break
		}
		start = above
	}
	return start
}

// hasHostTables reports whether b, valid TOML, has any [host."..."] table.
func hasHostTables(b []byte) bool {
	tables, _ := tableHeaders(b)
	for _, t := range tables {
		if _, ok := t.isHost(); ok {
			return true
		}
	}
	return false
}

// stripMirror returns b without mirror's host table and its subtables.
// Everything else, comments included, is kept byte for byte.
func stripMirror(b []byte, mirror string) ([]byte, error) {
	tables, err := tableHeaders(b)
	if err != nil {
		return nil, err
	}
	var out []byte
	last := 0
	for i, t := range tables {
		if host, ok := t.isHost(); !ok || host != mirror {
			continue
		}
		end := len(b)
		if i+1 < len(tables) {
			end = tables[i+1].start
		}
		out = append(out, b[last:t.start]...)
		last = end
	}
	if last == 0 {
		return b, nil
	}
	out = append(out, b[last:]...)
	if last == len(b) {
		// The table was at the end: drop the blank line that set it off.
		out = bytes.TrimRight(out, " \t\r\n")
		if len(out) > 0 {
			out = append(out, '\n')
		}
	}
	return out, nil
}

// mergeHosts returns b with mirror's host table placed before every other
// host table, so containerd tries nodecache first and the other hosts, then
// the server, after it. An existing table for mirror is replaced.
func mergeHosts(b []byte, mirror string) ([]byte, error) {
	rest, err := stripMirror(b, mirror)
	if err != nil {
		return nil, err
	}
	tables, err := tableHeaders(rest)
	if err != nil {
		return nil, err
	}
	table := mirrorTable(mirror)
	var out []byte
	for _, t := range tables {
		if _, ok := t.isHost(); ok {
			out = append(out, rest[:t.start]...)
			out = append(out, table+"\n"...)
			out = append(out, rest[t.start:]...)
			break
		}
	}
	if out == nil {
		out = bytes.TrimRight(rest, " \t\r\n")
		if len(out) > 0 {
			out = append(out, "\n\n"...)
		}
		out = append(out, table...)
	}
	// A host table given inline clashes with the new [host."..."] table,
	// and containerd ignores a file it cannot decode (an array of host
	// tables, an unknown capability).
	if err := checkHostsFile(out, mirror); err != nil {
		return nil, fmt.Errorf("%w (%v)", errCannotMerge, err)
	}
	return out, nil
}

// writeChecked writes data to path after checking that containerd reads it
// with mirror as the first host.
func writeChecked(path string, data []byte, perm fs.FileMode, mirror string) error {
	if err := checkHostsFile(data, mirror); err != nil {
		return err
	}
	return writeFileAtomic(path, data, perm)
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

// filePerm returns path's permission bits, or 0644 if it cannot be read.
func filePerm(path string) fs.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0o644
	}
	return fi.Mode().Perm()
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, renamed over path, then the directory synced, so a
// crash leaves the old file or the new one and never a torn one.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
