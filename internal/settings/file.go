package settings

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/pelletier/go-toml/v2"
)

// ApplyFile sets every flag that neither the command line nor the
// environment set from the TOML file at path, which a --config flag
// names. Its keys are the flag names (data-dir = "/var/lib/nodecache"); a
// repeatable flag takes an array. Unknown keys, config among them, are
// errors, so a misspelt setting is not silently ignored.
func ApplyFile(fs *flag.FlagSet, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var settings map[string]any
	if err := toml.Unmarshal(raw, &settings); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("--config %s:%d:%d: %v", path, row, col, de)
		}
		return fmt.Errorf("--config %s: %v", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key reported is always the same one
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("--config %s: unknown setting %q; settings are the flag names of nodecache %s --help", path, k, fs.Name())
		}
		if given[k] {
			continue
		}
		values, err := settingValues(settings[k])
		if err != nil {
			return fmt.Errorf("--config %s: %s: %v", path, k, err)
		}
		if _, isList := fs.Lookup(k).Value.(*List); !isList && len(values) != 1 {
			return fmt.Errorf("--config %s: %s: takes one value, not a list", path, k)
		}
		for _, v := range values {
			if err := fs.Set(k, v); err != nil {
				return fmt.Errorf("--config %s: %s: %v", path, k, err)
			}
		}
	}
	return nil
}

// settingValues turns a TOML value into flag values.
func settingValues(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want an array of strings")
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("want a string, a number, a boolean or an array of strings, not %T", v)
	}
}
