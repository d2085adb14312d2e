package daemon

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/pkg/pin"
)

// validatePins checks --pin-file, --pin-platform and --pin-refresh: the
// file must be readable and parse, so a mistake stops the start with the
// line named rather than leaving the node without its pins.
func (cfg *Config) validatePins() error {
	if cfg.PinRefresh < 0 {
		return fmt.Errorf("--pin-refresh: must not be negative")
	}
	if _, err := pinPlatforms(cfg.PinPlatforms); err != nil {
		return err
	}
	if cfg.PinFile == "" {
		if len(cfg.PinPlatforms) > 0 {
			return fmt.Errorf("--pin-platform: needs --pin-file")
		}
		return nil
	}
	f, err := os.Open(cfg.PinFile)
	if err != nil {
		return fmt.Errorf("--pin-file: %v", err)
	}
	defer f.Close()
	if _, err := pin.ParseFile(f); err != nil {
		return fmt.Errorf("--pin-file %s: %v", cfg.PinFile, err)
	}
	return nil
}

// pinPlatforms parses --pin-platform values (os/arch[/variant]).
func pinPlatforms(values []string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, v := range values {
		p, err := platforms.Parse(v)
		if err != nil {
			return nil, fmt.Errorf("--pin-platform %q: want os/arch[/variant], such as linux/amd64: %v", v, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// newPinManager builds the pin manager, which fetches through the first
// mirror listener: its requests take the pull path of any client. It
// returns nil without --pin-file, and then lets go of the pins an earlier
// run saved in the store: with no manager to ever release them, they
// would be kept for good, and evict would refuse them.
func (d *Daemon) newPinManager(log *slog.Logger) (*pin.Manager, error) {
	if d.cfg.PinFile == "" {
		if n := len(d.store.Pins()); n > 0 {
			if err := d.store.SetPins(nil); err != nil {
				return nil, err
			}
			log.Info("pins of an earlier run let go: no --pin-file", "digests", n)
		}
		return nil, nil
	}
	ps, err := pinPlatforms(d.cfg.PinPlatforms)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	src, err := pin.NewHTTPSource(d.ls.addresses()[0])
	if err != nil {
		return nil, err
	}
	return pin.New(d.cfg.PinFile, d.store, src,
		pin.WithPlatforms(ps), pin.WithRefresh(zeroMeans(d.cfg.PinRefresh, pin.DefaultRefresh)),
		pin.WithMaxSize(d.maxSize), pin.WithLogger(log)), nil
}
