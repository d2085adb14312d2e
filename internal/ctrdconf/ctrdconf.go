// Package ctrdconf reads containerd's configuration (config.toml, or the
// output of `containerd config dump`) and tells whether the CRI plugin's
// image pulls would go through the hosts directory that nodecache's
// hosts.toml files live in, or around it without a word.
//
// It reads only the settings that decide where a CRI pull goes: the
// registry's config_path and deprecated mirrors, and whether the pull
// uses containerd's transfer service. It reads them the way containerd
// itself does, migrating a version 1 or 2 file as containerd 2.x does.
// It does not follow a file's imports (`containerd config dump` does),
// does not change any file, and knows nothing of nodecache's flags.
package ctrdconf

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

const (
	// DefaultFile is where containerd reads its configuration unless
	// started with --config.
	DefaultFile = "/etc/containerd/config.toml"
	// LegacyConfigPath is what containerd 2.x on Linux uses as
	// config_path when neither config_path nor registry.mirrors is set.
	LegacyConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"
)

// The tables that hold the CRI plugin's image settings.
const (
	imagesV3 = "io.containerd.cri.v1.images" // version 3 and 4 (containerd 2.x)
	criV2    = "io.containerd.grpc.v1.cri"   // version 2 (containerd 1.3 and later)
	criV1    = "cri"                         // version 1
)

// ErrConfig wraps every error of a file or dump that containerd would
// not load.
var ErrConfig = errors.New("containerd configuration")

// Config is the part of containerd's configuration that decides where
// a CRI image pull goes.
type Config struct {
	// Version is the file's `version`; 1 when it has none, as containerd
	// reads it.
	Version int
	// Table is the registry table as the file names it, for messages:
	// plugins."io.containerd.cri.v1.images".registry for version 3 and 4.
	Table string
	// ConfigPath is registry.config_path as written ("" when unset).
	ConfigPath string
	// Mirrors are the registries of the deprecated registry.mirrors
	// tables, sorted.
	Mirrors []string
	// LocalPull is the setting that makes containerd 2.1 and later pull
	// without the transfer service ("" when none does): an explicit
	// use_local_image_pull = true, or one of the settings the transfer
	// service cannot honour, on which containerd falls back to it.
	LocalPull string
	// Imports are the files the configuration imports; only
	// `containerd config dump` reads them.
	Imports []string
}

// Defaults is the configuration containerd version v runs with when it
// has no file, with Table named in the format to write for v: version 3
// for 2.x, else version 2, which every release since 1.3 reads.
func Defaults(v Version) Config {
	if v.Major >= 2 {
		return Config{Version: 3, Table: `plugins."` + imagesV3 + `".registry`}
	}
	return Config{Version: 2, Table: `plugins."` + criV2 + `".registry`}
}

// ReadFile reads and parses a configuration file for containerd version
// v (the zero Version if unknown). A missing file is no error: containerd
// then runs with Defaults(v).
func ReadFile(path string, v Version) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Defaults(v), nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration as containerd does: the CRI image
// settings of a version 1 or 2 file are taken from where containerd 2.x
// migrates them from. A version 3 file is read as containerd 2.0 to 2.2
// read it. 2.3 and later (config version 4) migrate a version 3 file's
// old CRI table too, so a config_path left there is reported unset
// although 2.3 would find it; moving it to the images table, the fix
// named, is right on every release, and doctor reads the binary's own
// dump when it can.
func Parse(data []byte) (Config, error) {
	var raw struct {
		Version int            `toml:"version"`
		Imports []string       `toml:"imports"`
		Plugins map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c := Config{Version: max(raw.Version, 1), Imports: raw.Imports}
	images := table(raw.Plugins, imagesV3)
	c.Table = `plugins."` + imagesV3 + `".registry`
	if c.Version < 3 {
		old := criV2
		if c.Version == 1 {
			old = criV1
		}
		images = migrate(images, table(raw.Plugins, old))
		c.Table = `plugins."` + old + `".registry`
	}
	registry := table(images, "registry")
	var ok bool
	if c.ConfigPath, ok = stringAt(registry, "config_path"); !ok {
		return Config{}, fmt.Errorf("%w: %s.config_path is not a string", ErrConfig, c.Table)
	}
	for name := range table(registry, "mirrors") {
		c.Mirrors = append(c.Mirrors, name)
	}
	slices.Sort(c.Mirrors)
	c.LocalPull = localPull(images, registry)
	return c, nil
}

// migrate returns the image settings containerd 2.x derives from a
// version 1 or 2 file's CRI table (plugins/cri/images configMigration).
func migrate(images, cri map[string]any) map[string]any {
	dst := map[string]any{}
	for k, v := range images {
		dst[k] = v
	}
	for _, k := range []string{"registry", "max_concurrent_downloads", "image_pull_with_sync_fs"} {
		if v, ok := cri[k]; ok {
			dst[k] = v
		}
	}
	ctrd := table(cri, "containerd")
	if _, ok := ctrd["runtimes"]; !ok {
		// containerd 2.x returns before these keys when the file has
		// no runtimes table (checked with containerd 2.4.2's dump).
		return dst
	}
	for _, k := range []string{"disable_snapshot_annotations", "discard_unpacked_layers"} {
		if v, ok := ctrd[k]; ok {
			dst[k] = v
		}
	}
	return dst
}

// localPull names the setting on which containerd 2.1 and later pull
// without the transfer service (internal/cri/config
// CheckLocalImagePullConfigs), or returns "".
func localPull(images, registry map[string]any) string {
	switch {
	case images["use_local_image_pull"] == true:
		return "use_local_image_pull = true"
	case images["disable_snapshot_annotations"] == false:
		return "disable_snapshot_annotations = false"
	case images["discard_unpacked_layers"] == true:
		return "discard_unpacked_layers = true"
	case images["image_pull_with_sync_fs"] == true:
		return "image_pull_with_sync_fs = true"
	}
	if n, ok := images["max_concurrent_downloads"].(int64); ok && n != 3 {
		return fmt.Sprintf("max_concurrent_downloads = %d", n)
	}
	for _, k := range []string{"mirrors", "configs", "auths"} {
		if len(table(registry, k)) > 0 {
			return "registry." + k
		}
	}
	return ""
}

// table returns the sub-table key of t, or nil.
func table(t map[string]any, key string) map[string]any {
	m, _ := t[key].(map[string]any)
	return m
}

// stringAt returns the string at key, "" if absent, and false if the
// value is not a string.
func stringAt(t map[string]any, key string) (string, bool) {
	v, ok := t[key]
	if !ok {
		return "", true
	}
	s, ok := v.(string)
	return s, ok
}
