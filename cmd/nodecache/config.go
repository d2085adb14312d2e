package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"nodecache/internal/ociref"
	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/pin"
	"nodecache/pkg/upstream"
)

// Config is everything serve needs, from flags, the environment and
// --config: the daemon's settings and the logger's.
type Config struct {
	daemon.Config
	LogLevel  slog.Level
	LogFormat string // text or json
}

// parseServe reads serve's flags, then the environment, then --config,
// and checks them. Errors name the flag and say what is wrong, in one
// line.
func parseServe(args []string, stderr io.Writer) (Config, error) {
	fs, config := serveFlags()
	if err := parseFlags(fs, serveEnv, args, stderr, "nodecache serve [flags]"); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, usagef("unexpected argument %q", fs.Arg(0))
	}
	if path := fs.Lookup("config").Value.String(); path != "" {
		if err := settings.ApplyFile(fs, path); err != nil {
			return Config{}, usagef("%v", err)
		}
	}
	cfg, err := config()
	if err != nil {
		return Config{}, usagef("%v", err)
	}
	return cfg, nil
}

// serveFlags defines serve's flags and returns the function that turns
// their values into a checked Config.
func serveFlags() (*flag.FlagSet, func() (Config, error)) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := settings.NewList(daemon.DefaultListen)
	registries := &settings.List{}
	allow := settings.NewList(slices.Clone(mirror.DefaultAllowList)...)
	fs.Var(listen, "listen", "address to serve on: host:port or unix:///path/to/sock; repeatable")
	dataDir := fs.String("data-dir", daemon.DefaultDataDir(), "directory of the cache store")
	fs.Var(registries, "registry", "NAME=URL: the endpoint of registry NAME (e.g. docker.io=https://registry-1.docker.io); repeatable")
	defaultRegistry := fs.String("default-registry", mirror.DefaultRegistry, "registry for requests that name none (no ?ns=, no registry first in the path); "+noDefaultRegistry+" refuses them")
	fs.Var(allow, "allow-registry", "registry that may be contacted; repeatable; replaces the default list ("+strings.Join(mirror.DefaultAllowList, ",")+"), and every --registry and --default-registry name is added")
	maxSize := fs.String("max-size", "", "largest size of the store: bytes (500MiB, 20GiB) or a percentage of the data directory's filesystem (15%); default the smaller of 20GiB and 15%")
	minFree := fs.String("min-free", daemon.DefaultMinFree, "free space to keep on the data directory's filesystem, evicting as needed: bytes or a percentage")
	idleTTL := fs.Duration("ttl", daemon.DefaultTTL, "remove content unused for this long; 0 keeps it until evicted for space")
	tagTTL := fs.Duration("tag-ttl", mirror.DefaultTagTTL, "how long a tag's digest is reused without asking upstream; 0 asks every time")
	fillTimeout := fs.Duration("fill-timeout", mirror.DefaultFillTimeout, "longest a fill may go without taking in a byte; a transfer making progress is never cut")
	stall := fs.Duration("upstream-stall-timeout", upstream.DefaultStallTimeout, "an upstream body that sends nothing this long is a broken transfer: a blob resumes by Range, else its fill fails; 0 means the default")
	maxFills := fs.Int("max-concurrent-fills", mirror.DefaultMaxConcurrentFills, "downloads into the store that run at once; more wait for one to end")
	maxConns := fs.Int("max-connections", daemon.DefaultMaxConnections, "connections each listener serves at once; more wait to be accepted")
	grace := fs.Duration("shutdown-grace", daemon.DefaultShutdownGrace, "how long in-flight requests may finish after SIGTERM")
	scrub := fs.Duration("scrub-interval", diskstore.DefaultScrubInterval, "how often the store re-hashes every entry, at a low rate, removing bad ones; 0 turns it off")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	metricsListen := fs.String("metrics-listen", "", "also serve /metrics, /healthz and /readyz alone on this address (host:port or unix:///path); /metrics is always on --listen too")
	dockerConfig := fs.String("docker-config", "", "Docker config.json whose auths are the node's own registry credentials; reloaded on change")
	credentialsFile := fs.String("credentials-file", "", "TOML or YAML file of the node's registry credentials (registry -> username/password or token); reloaded on change")
	hostsDir := fs.String("hosts-dir", "", "containerd hosts directory (e.g. /etc/containerd/certs.d) to read upstream settings from: server, mirrors, ca, client certificates, skip_verify, header")
	pinFile := fs.String("pin-file", "", "file of image references to keep whatever else is pulled, one per line (registry/repo:tag or @digest, # comments); watched for changes")
	pinPlatforms := &settings.List{}
	fs.Var(pinPlatforms, "pin-platform", "platform of pinned images to fetch, such as linux/amd64; repeatable; default every platform")
	pinRefresh := fs.Duration("pin-refresh", pin.DefaultRefresh, "how often pinned tags are resolved again; a moved tag's new image is fetched and the old one let go")
	ctrdConfig := fs.String("containerd-config", "", "containerd's config.toml: export nodecache_doctor_problems, its settings that would send CRI pulls around the hosts directory (--hosts-dir, else /etc/containerd/certs.d)")
	peers := addPeerFlags(fs)
	fs.String("config", "", "TOML file of settings, keyed by flag name (data-dir = \"/var/lib/nodecache\"); flags and NODECACHE_* variables win over it")
	return fs, func() (Config, error) {
		cfg := Config{LogFormat: *logFormat, Config: daemon.Config{
			Listen: listen.Values, DataDir: *dataDir, DefaultRegistry: strings.ToLower(*defaultRegistry),
			TTL: *idleTTL, TagTTL: *tagTTL, FillTimeout: *fillTimeout, ShutdownGrace: *grace,
			MaxConcurrentFills: *maxFills, MaxConnections: *maxConns,
			Registries: map[string]string{}, MetricsListen: *metricsListen,
			DockerConfig: *dockerConfig, CredentialsFile: *credentialsFile, HostsDir: *hostsDir,
			ContainerdConfig:     *ctrdConfig,
			ScrubInterval:        *scrub,
			UpstreamStallTimeout: *stall,
			PinFile:              *pinFile, PinPlatforms: pinPlatforms.Values, PinRefresh: *pinRefresh,
		}}
		if err := cfg.checkSizes(*maxSize, *minFree); err != nil {
			return Config{}, err
		}
		if err := cfg.checkDefaultRegistry(); err != nil {
			return Config{}, err
		}
		if err := cfg.check(registries.Values, allow.Values, *logLevel); err != nil {
			return Config{}, err
		}
		if err := peers.copyTo(&cfg.Config); err != nil {
			return Config{}, err
		}
		return cfg, cfg.Validate()
	}
}

// check reads the registries and the allow list into cfg and checks the
// logger's settings; daemon.Config.Validate checks the rest.
func (cfg *Config) check(registries, allow []string, logLevel string) error {
	for _, r := range registries {
		name, endpoint, ok := strings.Cut(r, "=")
		if !ok || name == "" {
			return fmt.Errorf("--registry %q: want NAME=URL", r)
		}
		if err := checkEndpoint(endpoint); err != nil {
			return fmt.Errorf("--registry %q: %v", r, err)
		}
		cfg.Registries[strings.ToLower(name)] = endpoint
	}
	for _, a := range allow {
		if a == "" || strings.ContainsAny(a, "/ ") {
			return fmt.Errorf("--allow-registry %q: want a registry host such as ghcr.io or localhost:5000", a)
		}
	}
	cfg.AllowRegistries = append(cfg.AllowRegistries, allow...)
	for name := range cfg.Registries {
		cfg.AllowRegistries = append(cfg.AllowRegistries, name)
	}
	if cfg.DefaultRegistry != mirror.NoDefaultRegistry {
		cfg.AllowRegistries = append(cfg.AllowRegistries, cfg.DefaultRegistry)
	}
	for i, a := range cfg.AllowRegistries {
		cfg.AllowRegistries[i] = strings.ToLower(a)
	}
	slices.Sort(cfg.AllowRegistries)
	cfg.AllowRegistries = slices.Compact(cfg.AllowRegistries)
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", cfg.LogFormat)
	}
	return nil
}

// noDefaultRegistry is the --default-registry value that refuses
// requests naming no registry (mirror.NoDefaultRegistry).
const noDefaultRegistry = "none"

// checkDefaultRegistry checks --default-registry, a registry host or
// none, and maps none to mirror.NoDefaultRegistry.
func (cfg *Config) checkDefaultRegistry() error {
	if cfg.DefaultRegistry == noDefaultRegistry {
		cfg.DefaultRegistry = mirror.NoDefaultRegistry
		return nil
	}
	if err := ociref.CheckRegistry(cfg.DefaultRegistry); err != nil {
		return fmt.Errorf("--default-registry %q: want a registry host such as docker.io or localhost:5000, or %s", cfg.DefaultRegistry, noDefaultRegistry)
	}
	return nil
}

func (cfg *Config) checkSizes(maxSize, minFree string) error {
	if maxSize != "" {
		spec, err := daemon.ParseSize(maxSize)
		if err != nil {
			return fmt.Errorf("--max-size %q: %v", maxSize, err)
		}
		if spec.Percent == 0 && spec.Bytes == 0 {
			return fmt.Errorf("--max-size %q: must be above 0", maxSize)
		}
		cfg.MaxSize = &spec
	}
	spec, err := daemon.ParseSize(minFree)
	if err != nil {
		return fmt.Errorf("--min-free %q: %v", minFree, err)
	}
	cfg.MinFree = spec
	return nil
}

func checkEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an http:// or https:// URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("the URL must not have a query or fragment")
	}
	return nil
}
