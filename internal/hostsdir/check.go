package hostsdir

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

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

// Check decodes data as containerd v2's hosts.toml loader does and
// checks what containerd would try: mirror first, for pull and resolve
// only, with no TLS options, and a fallback after it. It reads none of the
// certificate files the file names: a certificate that is missing now is
// no reason to refuse, and relative paths would resolve elsewhere.
//
// Check works on bytes because Load cannot judge a file before it is
// written: containerd's loader reads only a directory, falls back to the
// registry without a word when a file does not decode, and fails on a
// certificate it cannot read. The tests hold the two to each other: every
// file Write accepts, Load reads with mirror first.
func Check(data []byte, mirror string) error {
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
