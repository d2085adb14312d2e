package ctrdconf

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"nodecache/internal/hostsdir"
)

// Problem is one reason a pull would go around nodecache: the setting
// at fault, what containerd does with it, and the fix.
type Problem struct {
	Setting string
	Detail  string
	Fix     string
}

// String is the problem in one line.
func (p Problem) String() string {
	return p.Setting + ": " + p.Detail + "; fix: " + p.Fix
}

// Check returns the problems of c that would send CRI pulls around the
// hosts directory hostsDir, where nodecache's hosts.toml files are, on
// containerd version v. An unknown v is judged as any release that reads
// c's version of the format, 1.x or 2.x, and a problem of either is
// reported.
func Check(c Config, v Version, hostsDir string) []Problem {
	want := fmt.Sprintf("set config_path = %q", hostsDir)
	if len(c.Mirrors) > 0 {
		p := Problem{Setting: c.Table + ".mirrors", Fix: "delete the registry.mirrors tables and " + want}
		if c.ConfigPath != "" {
			p.Detail = "cannot be combined with config_path: containerd refuses to start its CRI plugin"
			p.Fix = "delete the registry.mirrors tables (the hosts.toml files replace them)"
		} else {
			p.Detail = fmt.Sprintf("deprecated tables for %s; CRI pulls follow them and read no hosts.toml", strings.Join(c.Mirrors, ", "))
		}
		return []Problem{p}
	}
	// A version 3 or 4 file runs only on containerd 2.x.
	may1 := v.Major == 1 || (!v.Known() && c.Version < 3)
	may2 := v.Major >= 2 || !v.Known()
	transfer := may2 && (!v.Known() || v.atLeast(2, 1)) && c.LocalPull == ""
	key := c.Table + ".config_path"
	path := c.ConfigPath
	if path == "" {
		if may1 || transfer {
			return []Problem{{Setting: key, Fix: want, Detail: unsetDetail(may1, may2)}}
		}
		path = LegacyConfigPath
	}
	dirs := filepath.SplitList(path)
	if len(dirs) > 1 && transfer {
		return []Problem{{Setting: key, Fix: want + `, or use_local_image_pull = true in [plugins."` + imagesV3 + `"]`,
			Detail: fmt.Sprintf("%q is read as one directory by the transfer-service pull of containerd 2.1 and later, so CRI pulls go straight to the registry", path)}}
	}
	for i := range dirs {
		dirs[i] = filepath.Clean(dirs[i])
	}
	if !slices.Contains(dirs, filepath.Clean(hostsDir)) {
		return []Problem{{Setting: key, Fix: want + " or write the hosts.toml files into " + dirs[0],
			Detail: fmt.Sprintf("%q does not include %s, where the hosts.toml files that use nodecache are", path, hostsDir)}}
	}
	return nil
}

// unsetDetail says why an unset config_path sends CRI pulls around the
// hosts directory on containerd 1.x, 2.x, or either.
func unsetDetail(may1, may2 bool) string {
	v1 := "containerd 1.x then reads no hosts.toml"
	v2 := fmt.Sprintf("containerd 2.x then uses %q, which 2.1 and later read as one directory on the transfer-service pull", LegacyConfigPath)
	switch {
	case !may2:
		return "unset: " + v1 + ", so CRI pulls go straight to the registry"
	case !may1:
		return "unset: " + v2 + ", so CRI pulls go straight to the registry"
	}
	return "unset: " + v1 + ", and " + v2
}

// CheckRegistries returns a problem for each registry whose hosts.toml
// in hostsDir (its own or _default) does not send pulls to mirror
// (scheme://host:port), read with containerd's own loader.
func CheckRegistries(ctx context.Context, hostsDir, mirror string, registries []string) []Problem {
	var problems []Problem
	for _, r := range registries {
		fix := fmt.Sprintf("nodecache hosts --dir %s --registry %s --mirror %s", hostsDir, r, mirror)
		hosts, err := hostsdir.Load(ctx, hostsDir, r)
		if err != nil {
			problems = append(problems, Problem{Setting: hostsdir.Path(hostsDir, r), Detail: err.Error(), Fix: fix + " --replace"})
			continue
		}
		var order []string
		for _, h := range hosts {
			order = append(order, h.Scheme+"://"+h.Host)
		}
		if !slices.Contains(order, mirror) {
			problems = append(problems, Problem{Setting: hostsdir.Path(hostsDir, r), Fix: fix,
				Detail: fmt.Sprintf("pulls from %s do not go to nodecache at %s (containerd tries %s)", r, mirror, strings.Join(order, ", "))})
		}
	}
	return problems
}
