package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"nodecache/internal/atomicfile"
	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
)

const (
	// defaultContainersConf is the drop-in containers-registries.conf(5)
	// reads after /etc/containers/registries.conf. Drop-ins are read in
	// name order and a later [[registry]] with the same prefix replaces an
	// earlier one; 50 leaves room on both sides for the distribution's
	// files and the operator's.
	defaultContainersConf = "/etc/containers/registries.conf.d/50-nodecache.conf"
	// containersConfMarker opens every file containers-conf writes, so
	// that it changes or deletes only its own files.
	containersConfMarker = "# Written by `nodecache containers-conf`"
	// containersConfEnv is the prefix of containers-conf's environment
	// variables: its --registry and --mirror mean something else than
	// serve's.
	containersConfEnv settings.Env = "NODECACHE_CONTAINERS_CONF_CMD_"
)

// containersConfHeader is the comment above the tables of every file
// containers-conf writes.
const containersConfHeader = containersConfMarker + "; `nodecache containers-conf --remove` deletes it.\n" +
	"# containers/image (CRI-O, podman, buildah, skopeo) tries each mirror in\n" +
	"# order, then the registry itself, so a node never depends on its cache.\n\n"

// containersConf is the part of containers-registries.conf(5) that
// containers-conf writes.
type containersConf struct {
	Registry []containersRegistry `toml:"registry"`
}

type containersRegistry struct {
	Prefix   string             `toml:"prefix"`
	Location string             `toml:"location"`
	Mirror   []containersMirror `toml:"mirror"`
}

type containersMirror struct {
	Location       string `toml:"location"`
	Insecure       bool   `toml:"insecure,omitempty"`
	PullFromMirror string `toml:"pull-from-mirror"`
}

// containersConfOptions is what `nodecache containers-conf` was asked to do.
type containersConfOptions struct {
	file       string
	registries []string // normalised: docker.io for Docker Hub
	mirror     string   // host:port, as containers/image takes a location
	insecure   bool     // the mirror speaks plain http
	remove     bool
}

// containersConfCmd writes, or with --remove undoes, a drop-in that puts
// nodecache in front of registries for containers/image clients.
func containersConfCmd(args []string, stdout, stderr io.Writer) error {
	fs, options := containersConfFlags()
	err := parseFlags(fs, containersConfEnv, args, stderr,
		"nodecache containers-conf --registry NAME [--registry NAME...] [--mirror HOST:PORT] [--file PATH] [--remove]")
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("containers-conf: unexpected argument %q", fs.Arg(0))
	}
	opts, err := options()
	if err != nil {
		return err
	}
	var result string
	if opts.remove {
		result, err = removeContainersConf(opts)
	} else {
		result, err = writeContainersConf(opts)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", opts.file, err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", opts.file, result)
	return nil
}

func containersConfFlags() (*flag.FlagSet, func() (containersConfOptions, error)) {
	fs := flag.NewFlagSet("containers-conf", flag.ContinueOnError)
	opts := containersConfOptions{}
	var registries settings.List
	fs.StringVar(&opts.file, "file", defaultContainersConf, "the drop-in file to write")
	fs.Var(&registries, "registry", "registry to pull through nodecache, such as docker.io or quay.io. Repeatable")
	mirror := fs.String("mirror", daemon.DefaultListen, "nodecache as the clients reach it: HOST:PORT for plain http, or https://HOST:PORT")
	fs.BoolVar(&opts.remove, "remove", false, "undo: take the registries out of the file (all of them without --registry), deleting it once empty")
	return fs, func() (containersConfOptions, error) {
		if len(registries.Values) == 0 && !opts.remove {
			return opts, usagef("--registry: name at least one registry")
		}
		if opts.file == "" {
			return opts, usagef("--file: must not be empty")
		}
		var err error
		if opts.mirror, opts.insecure, err = parseMirrorHost(*mirror); err != nil {
			return opts, err
		}
		if _, err := registryName(opts.mirror); err != nil {
			// HOST:PORT/NAME/repo must be an image reference: one that is
			// not fails every pull of NAME rather than skipping the mirror.
			return opts, usagef("--mirror %q: containers/image needs a host name or IPv4 address with a dot or a port, not an IPv6 literal", *mirror)
		}
		for _, r := range registries.Values {
			name, err := registryName(r)
			if err != nil {
				return opts, usagef("--registry %q: %v", r, err)
			}
			if strings.Contains(name, ":") {
				// The mirror location would be HOST:PORT/NAME:PORT, which
				// is no image reference: containers/image refuses it.
				return opts, usagef("--registry %q: a registry with a port cannot be named in a mirror's path; containers/image refuses it", r)
			}
			if !slices.Contains(opts.registries, name) {
				opts.registries = append(opts.registries, name)
			}
		}
		return opts, nil
	}
}

// registryHostRE is a registry host as an image reference names it: DNS
// labels, then an optional port. (containers/image does not accept an
// IPv6 literal as a reference's domain.)
var registryHostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)

// registryName checks a registry host and returns it in the form image
// references use: lower case, with Docker Hub's other names as
// docker.io, which is the prefix containers/image gives its images.
func registryName(v string) (string, error) {
	name := strings.ToLower(v)
	// An image reference takes its first component as a registry only
	// if it has a dot or a port or is localhost (docker.io/library/x
	// otherwise).
	isHost := strings.ContainsAny(name, ".:") || name == "localhost"
	if !isHost || !registryHostRE.MatchString(name) {
		return "", errors.New("want a registry host such as docker.io or localhost:5000, without a scheme or path")
	}
	switch name {
	case "index.docker.io", "registry-1.docker.io":
		name = "docker.io"
	}
	return name, nil
}

// parseMirrorHost reads a mirror address given as HOST:PORT (plain
// http, as nodecache serves by default) or as http(s)://HOST:PORT, and
// returns it as HOST:PORT and whether it is plain http.
func parseMirrorHost(v string) (host string, insecure bool, err error) {
	raw := v
	if !strings.Contains(v, "://") {
		raw = "http://" + v
	}
	u, perr := url.Parse(raw)
	if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", false, usagef("--mirror %q: want HOST:PORT or http(s)://HOST:PORT, without a path", v)
	}
	return u.Host, u.Scheme == "http", nil
}

// writeContainersConf adds the registries to the file, keeping the other
// registries a previous run wrote, and writes it only if it changes.
func writeContainersConf(opts containersConfOptions) (string, error) {
	conf, old, err := readContainersConf(opts.file)
	if err != nil {
		return "", err
	}
	for _, name := range opts.registries {
		conf.Registry = slices.DeleteFunc(conf.Registry, func(r containersRegistry) bool { return r.Prefix == name })
		conf.Registry = append(conf.Registry, containersRegistry{
			Prefix: name, Location: name,
			Mirror: []containersMirror{{
				Location: opts.mirror + "/" + name, Insecure: opts.insecure, PullFromMirror: "all",
			}},
		})
	}
	return saveContainersConf(opts.file, conf, old)
}

// removeContainersConf takes the registries (every one if none is named)
// out of a file containers-conf wrote, deleting it once none is left.
func removeContainersConf(opts containersConfOptions) (string, error) {
	conf, old, err := readContainersConf(opts.file)
	if err != nil || old == nil {
		return "absent", err
	}
	conf.Registry = slices.DeleteFunc(conf.Registry, func(r containersRegistry) bool {
		return len(opts.registries) == 0 || slices.Contains(opts.registries, r.Prefix)
	})
	if len(conf.Registry) > 0 {
		return saveContainersConf(opts.file, conf, old)
	}
	if err := os.Remove(opts.file); err != nil {
		return "", err
	}
	return "removed", atomicfile.SyncDir(filepath.Dir(opts.file))
}

// readContainersConf reads a file containers-conf wrote; a missing file
// is an empty one (old is nil), and a file without the marker is
// another's, which it refuses to touch.
func readContainersConf(path string) (conf containersConf, old []byte, err error) {
	old, err = os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return conf, nil, nil
	}
	if err != nil {
		return conf, nil, err
	}
	if !bytes.HasPrefix(old, []byte(containersConfMarker)) {
		return conf, nil, errors.New("not written by nodecache containers-conf; leaving it as it is (choose another --file)")
	}
	if err := toml.Unmarshal(old, &conf); err != nil {
		return conf, nil, fmt.Errorf("cannot read it back: %w", err)
	}
	return conf, old, nil
}

// saveContainersConf writes conf, sorted by prefix, atomically, unless
// the file already holds exactly that.
func saveContainersConf(path string, conf containersConf, old []byte) (string, error) {
	slices.SortFunc(conf.Registry, func(a, b containersRegistry) int { return strings.Compare(a.Prefix, b.Prefix) })
	body, err := toml.Marshal(conf)
	if err != nil {
		return "", err
	}
	data := append([]byte(containersConfHeader), body...)
	if bytes.Equal(data, old) {
		return "unchanged", nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.Write("", path, data, 0o644); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	if old == nil {
		return "created", nil
	}
	return "updated", nil
}
