package daemon

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nodecache/pkg/peer"
)

// Defaults for the settings that have one; cmd/nodecache uses them as its
// flags' defaults.
const (
	// DefaultListen is the mirror's address: loopback only, since the
	// mirror serves anyone who can reach it.
	DefaultListen = "127.0.0.1:5050"
	// DefaultTTL drops content nobody pulled for a week: long enough to
	// cover a weekly build or deploy cycle, short enough that a retired
	// image does not hold disk for long.
	DefaultTTL = 7 * 24 * time.Hour
	// DefaultMinFree keeps 10% of the filesystem free whatever the cache
	// holds, below the kubelet's default image GC threshold of 15% free
	// (85% used) so the two do not fight.
	DefaultMinFree = "10%"
	// DefaultShutdownGrace lets a pull in progress finish on SIGTERM;
	// systemd's own stop timeout is 90 s, so 30 s fits well inside it.
	DefaultShutdownGrace = 30 * time.Second
)

// DefaultDataDir is /var/lib/nodecache for root, the user cache dir else.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/nodecache"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "nodecache")
	}
	return filepath.Join(os.TempDir(), "nodecache")
}

// Config is everything the daemon needs. cmd/nodecache builds it from
// serve's flags, NODECACHE_* variables and --config; each field's comment
// names its flag, which the daemon's errors name too.
type Config struct {
	Listen          []string          // --listen: host:port or unix:///path
	DataDir         string            // --data-dir: root of the store
	Registries      map[string]string // --registry: registry name -> endpoint URL
	DefaultRegistry string            // --default-registry: for requests that name no registry; "" for none
	AllowRegistries []string          // --allow-registry: registries that may be contacted
	MaxSize         *Size             // --max-size; nil: the smaller of 20 GiB and 15%
	MinFree         Size              // --min-free: free space to keep on the filesystem
	TTL             time.Duration     // --ttl: idle expiry of content; 0 disables it
	TagTTL          time.Duration     // --tag-ttl: 0 asks upstream every time
	FillTimeout     time.Duration     // --fill-timeout: bound on one upstream fetch
	ShutdownGrace   time.Duration     // --shutdown-grace: 0 aborts requests in flight at once
	ScrubInterval   time.Duration     // --scrub-interval: how often the store is re-hashed; 0 turns it off
	MetricsListen   string            // --metrics-listen: /metrics and the probes alone; "" for none
	DockerConfig    string            // --docker-config; "" for none
	CredentialsFile string            // --credentials-file; "" for none
	HostsDir        string            // --hosts-dir: containerd hosts directory; "" for none
	// ContainerdConfig is --containerd-config: containerd's config.toml,
	// checked at each scrape for nodecache_doctor_problems; "" for none.
	ContainerdConfig string
	// Peers: without any of Peers, PeerDNS and PeerFile, every fill goes
	// to upstream and the other peer fields are empty.
	Peers          []string // --peers, normalised host:port
	PeerDNS        string   // --peer-dns: name:port whose addresses are peers
	PeerFile       string   // --peer-file: file of peers, reloaded on change
	Advertise      string   // --advertise: this node's peer address as the others know it
	PeerListen     string   // --peer-listen: where to serve the peer API
	PeerSecretFile string   // --peer-secret-file: the shared secret
	PeerFanout     int      // --peer-fanout: peers one blob streams to at once; 0 means peer.DefaultFanout
	// MaxConcurrentFills (--max-concurrent-fills) bounds the fills that run
	// at once; 0 means mirror.DefaultMaxConcurrentFills.
	MaxConcurrentFills int
	// MaxConnections (--max-connections) bounds the connections each
	// listener serves at once; 0 means DefaultMaxConnections.
	MaxConnections int
	// Version goes into the upstream User-Agent, nodecache/<Version>.
	Version string

	// UpstreamStallTimeout (--upstream-stall-timeout) ends an upstream
	// body that sends nothing this long; 0 means upstream.DefaultStallTimeout.
	UpstreamStallTimeout time.Duration

	// Pins (pins.go): PinFile (--pin-file) lists images kept whatever
	// else is pulled, "" for none; PinPlatforms (--pin-platform) limits
	// them to these platforms, none for all; PinRefresh (--pin-refresh)
	// is how often pinned tags are resolved again, 0 for the default.
	PinFile      string
	PinPlatforms []string
	PinRefresh   time.Duration
}

// PeersEnabled reports whether any peer discovery setting is set.
func (cfg *Config) PeersEnabled() bool {
	return len(cfg.Peers) > 0 || cfg.PeerDNS != "" || cfg.PeerFile != ""
}

// ConfigError is a mistake in the Config that New finds when it acts on it:
// a credentials file that does not parse, a peer secret that is too short.
// Its message is one line that names the setting's flag.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// Validate checks what can be checked before anything is opened: the
// listen addresses, the directories, the durations and the peer settings.
// Errors are one line naming the flag. New calls it too.
func (cfg *Config) Validate() error {
	if len(cfg.Listen) == 0 {
		return fmt.Errorf("--listen: at least one address is required")
	}
	for _, l := range cfg.Listen {
		if err := checkListen(l); err != nil {
			return fmt.Errorf("--listen %q: %v", l, err)
		}
	}
	if cfg.MetricsListen != "" {
		if err := checkListen(cfg.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: %v", cfg.MetricsListen, err)
		}
	}
	if cfg.HostsDir != "" {
		if fi, err := os.Stat(cfg.HostsDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("--hosts-dir %s: not a directory", cfg.HostsDir)
		}
	}
	if cfg.DataDir == "" {
		return fmt.Errorf("--data-dir: must not be empty")
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--ttl", cfg.TTL}, {"--tag-ttl", cfg.TagTTL}, {"--fill-timeout", cfg.FillTimeout}, {"--shutdown-grace", cfg.ShutdownGrace},
		{"--scrub-interval", cfg.ScrubInterval},
		{"--upstream-stall-timeout", cfg.UpstreamStallTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("%s: must not be negative", d.flag)
		}
	}
	if cfg.MaxConcurrentFills < 0 {
		return fmt.Errorf("--max-concurrent-fills: must not be negative")
	}
	if cfg.MaxConnections < 0 {
		return fmt.Errorf("--max-connections: must not be negative")
	}
	if err := cfg.validatePins(); err != nil {
		return err
	}
	return cfg.validatePeers()
}

// validatePeers checks the peer settings: all or none of them.
func (cfg *Config) validatePeers() error {
	if cfg.PeerFanout < 0 {
		return fmt.Errorf("--peer-fanout: must not be negative")
	}
	if cfg.PeerDNS != "" {
		if _, err := peer.NormalizeAddr(cfg.PeerDNS); err != nil {
			return fmt.Errorf("--peer-dns %q: want name:port: %v", cfg.PeerDNS, err)
		}
	}
	needed := []struct{ name, v string }{
		{"--advertise", cfg.Advertise}, {"--peer-listen", cfg.PeerListen}, {"--peer-secret-file", cfg.PeerSecretFile},
	}
	if !cfg.PeersEnabled() {
		for _, f := range needed {
			if f.v != "" {
				return fmt.Errorf("%s: needs --peers, --peer-dns or --peer-file", f.name)
			}
		}
		return nil
	}
	for _, f := range needed {
		if f.v == "" {
			return fmt.Errorf("%s: required with --peers, --peer-dns or --peer-file", f.name)
		}
	}
	if _, err := peer.NormalizeAddr(cfg.Advertise); err != nil {
		return fmt.Errorf("--advertise %q: %v", cfg.Advertise, err)
	}
	if strings.HasPrefix(cfg.PeerListen, "unix://") {
		return fmt.Errorf("--peer-listen %q: peers connect over TCP; want host:port", cfg.PeerListen)
	}
	if err := checkListen(cfg.PeerListen); err != nil {
		return fmt.Errorf("--peer-listen %q: %v", cfg.PeerListen, err)
	}
	return nil
}

// checkListen checks a listen address: host:port with an IP address or
// localhost, or unix:///absolute/path.
func checkListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("a unix socket path must be absolute")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port or unix:///path")
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("host must be an IP address or localhost")
	}
	if port == "" {
		return fmt.Errorf("missing port")
	}
	return nil
}
