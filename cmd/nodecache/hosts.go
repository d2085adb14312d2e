package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"nodecache/internal/ctrdconf"
	"nodecache/internal/hostsdir"
	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
)

// defaultMirror is serve's default --listen address, as containerd
// reaches it.
const defaultMirror = "http://" + daemon.DefaultListen

// hostsTarget is one hosts.toml to write: the directory name under --dir
// and the upstream endpoint for its server line ("" for _default).
type hostsTarget struct {
	name, server string
}

// hostsOptions is what `nodecache hosts` was asked to do.
type hostsOptions struct {
	dir        string
	targets    []hostsTarget
	mirror     string // scheme://host[:port], no trailing slash
	replace    bool
	remove     bool
	ctrdConfig string // containerd's config.toml, checked after writing
	ctrdBin    string // the containerd binary; "" for none
}

// hosts writes, or with --remove undoes, containerd hosts.toml files that
// put nodecache in front of registries.
func hosts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	warnOldHostsVariables(stderr)
	opts, err := parseHosts(args, stderr)
	if err != nil {
		return err
	}
	for _, t := range opts.targets {
		path := hostsdir.Path(opts.dir, t.name)
		var result string
		if opts.remove {
			result, err = hostsdir.Remove(path, opts.mirror)
		} else {
			result, err = hostsdir.Write(path, t.server, opts.mirror, opts.replace)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", path, result)
	}
	if !opts.remove && onContainerdNode(opts.ctrdConfig, opts.ctrdBin) {
		// The files are written either way: containerd may be
		// reconfigured after them, and pulls fall back to the registry.
		for _, p := range containerdProblems(ctx, opts.ctrdConfig, opts.ctrdBin, opts.dir, io.Discard) {
			fmt.Fprintln(stderr, "nodecache hosts: warning:", p)
		}
	}
	return nil
}

// onContainerdNode reports whether hosts runs where containerd's
// configuration can be judged: the file is there, or the binary is (then
// a missing file means containerd's defaults). In a container that
// mounts only the hosts directory, neither is, and nothing is said;
// doctor, given the file, judges it there.
func onContainerdNode(file, bin string) bool {
	if _, err := os.Stat(file); err == nil {
		return true
	}
	if bin == "" {
		return false
	}
	_, err := exec.LookPath(bin)
	return err == nil
}

// warnOldHostsVariables names on stderr each NODECACHE_<FLAG> variable
// that is set for a flag of hosts alone (NODECACHE_MIRROR, NODECACHE_DIR,
// ...). hosts reads only NODECACHE_HOSTS_CMD_<FLAG>, and an environment
// file written for the older names would otherwise be ignored without a
// word. A name serve or verify reads (NODECACHE_REGISTRY) is theirs, and
// is not named.
func warnOldHostsVariables(stderr io.Writer) {
	own, _ := hostsFlags()
	serve, _ := serveFlags()
	verify, _ := verifyFlags()
	own.VisitAll(func(f *flag.Flag) {
		if serve.Lookup(f.Name) != nil || verify.Lookup(f.Name) != nil {
			return
		}
		old := serveEnv.Name(f.Name)
		if _, set := os.LookupEnv(old); set {
			fmt.Fprintf(stderr, "nodecache hosts: %s is ignored; set %s\n", old, hostsEnv.Name(f.Name))
		}
	})
}

func parseHosts(args []string, stderr io.Writer) (hostsOptions, error) {
	fs, options := hostsFlags()
	err := parseFlags(fs, hostsEnv, args, stderr, "nodecache hosts --registry NAME [--registry NAME...] [--all] [--dir DIR] [--mirror URL] [--replace|--remove]")
	if err != nil {
		return hostsOptions{}, err
	}
	if fs.NArg() > 0 {
		return hostsOptions{}, usagef("hosts: unexpected argument %q", fs.Arg(0))
	}
	return options()
}

// hostsFlags defines the flags of hosts and returns the function that
// turns their values into checked options.
func hostsFlags() (*flag.FlagSet, func() (hostsOptions, error)) {
	fs := flag.NewFlagSet("hosts", flag.ContinueOnError)
	opts := hostsOptions{}
	var registries settings.List
	fs.StringVar(&opts.dir, "dir", hostsdir.DefaultDir, "containerd's hosts directory (its config_path)")
	fs.Var(&registries, "registry", "registry to mirror: NAME, or NAME=URL to name its endpoint. Repeatable")
	all := fs.Bool("all", false, "mirror every registry, through DIR/_default/hosts.toml")
	mirror := fs.String("mirror", defaultMirror, "nodecache's URL as containerd reaches it")
	fs.BoolVar(&opts.replace, "replace", false, "replace an existing hosts.toml, keeping a copy as hosts.toml"+hostsdir.BackupSuffix)
	fs.BoolVar(&opts.remove, "remove", false, "undo: restore the copy --replace kept, or take nodecache's host out")
	fs.StringVar(&opts.ctrdConfig, "containerd-config", ctrdconf.DefaultFile, "containerd's configuration file, checked after writing: a warning for each setting that would send CRI pulls around DIR")
	fs.StringVar(&opts.ctrdBin, "containerd", "containerd", "the containerd binary, for its version and `config dump`; skipped if not found; \"\" never runs it")
	return fs, func() (hostsOptions, error) {
		if len(registries.Values) == 0 && !*all {
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
		for _, r := range registries.Values {
			t, err := parseHostsTarget(r)
			if err != nil {
				return opts, err
			}
			opts.targets = append(opts.targets, t)
		}
		if *all {
			opts.targets = append(opts.targets, hostsTarget{name: hostsdir.DefaultName})
		}
		return opts, nil
	}
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
	if name == hostsdir.DefaultName {
		return hostsTarget{}, usagef("--registry %q: use --all to mirror every registry", v)
	}
	if !explicit {
		return hostsTarget{name: name, server: hostsdir.Server(name)}, nil
	}
	if err := checkEndpoint(endpoint); err != nil {
		return hostsTarget{}, usagef("--registry %q: %v", v, err)
	}
	return hostsTarget{name: name, server: strings.TrimSuffix(endpoint, "/")}, nil
}
