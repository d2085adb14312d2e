package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"time"

	"nodecache/internal/ctrdconf"
	"nodecache/internal/hostsdir"
	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
	"nodecache/pkg/mirror"
)

const (
	// DefaultProbeTimeout bounds doctor's GET /v2/ to nodecache. On the
	// node's loopback it answers in a millisecond; 2 s is far above that
	// and still short enough for a pod's init step.
	DefaultProbeTimeout = 2 * time.Second
	// doctorEnv is the prefix of doctor's environment variables.
	doctorEnv settings.Env = "NODECACHE_DOCTOR_CMD_"
)

// errProblems makes doctor exit 1 when it found a problem.
var errProblems = errors.New("pulls would go around nodecache; see the lines above")

// doctorOptions is what `nodecache doctor` was asked to check.
type doctorOptions struct {
	file         string // containerd's config.toml
	bin          string // the containerd binary; "" for none
	hostsDir     string
	mirror       string // http(s)://host:port
	registries   []string
	probeTimeout time.Duration // negative: no probe
	reportOnly   bool
}

// doctor checks that containerd's CRI pulls would reach nodecache and
// prints one line per problem, naming the setting and the fix.
func doctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, options := doctorFlags()
	err := parseFlags(fs, doctorEnv, args, stderr,
		"nodecache doctor [--containerd-config FILE] [--mirror HOST:PORT] [--hosts-dir DIR] [--registry NAME...] [--report-only]")
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("doctor: unexpected argument %q", fs.Arg(0))
	}
	opts, err := options()
	if err != nil {
		return err
	}
	problems := containerdProblems(ctx, opts.file, opts.bin, opts.hostsDir, stdout)
	problems = append(problems, ctrdconf.CheckRegistries(ctx, opts.hostsDir, opts.mirror, opts.registries)...)
	if opts.probeTimeout >= 0 {
		if err := probeMirror(ctx, opts.mirror, opts.probeTimeout); err != nil {
			problems = append(problems, ctrdconf.Problem{Setting: "--mirror " + opts.mirror, Detail: err.Error(),
				Fix: "start nodecache serve with --listen at that address, or give doctor the address containerd uses"})
		}
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, "problem:", p)
	}
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "ok: CRI pulls of %d registries go to nodecache at %s\n", len(opts.registries), opts.mirror)
		return nil
	}
	if opts.reportOnly {
		return nil
	}
	return fmt.Errorf("problems found: %d: %w", len(problems), errProblems)
}

func doctorFlags() (*flag.FlagSet, func() (doctorOptions, error)) {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	opts := doctorOptions{}
	registries := settings.NewList(slices.Clone(mirror.DefaultAllowList)...)
	fs.StringVar(&opts.file, "containerd-config", ctrdconf.DefaultFile, "containerd's configuration file")
	fs.StringVar(&opts.bin, "containerd", "containerd", "the containerd binary, for its version and `config dump`; skipped if not found; \"\" never runs it")
	fs.StringVar(&opts.hostsDir, "hosts-dir", hostsdir.DefaultDir, "the hosts directory nodecache's hosts.toml files are in")
	fs.Var(registries, "registry", "registry whose pulls must go through nodecache; repeatable; default serve's default allow-list")
	m := fs.String("mirror", daemon.DefaultListen, "nodecache as containerd reaches it: HOST:PORT or http(s)://HOST:PORT")
	fs.DurationVar(&opts.probeTimeout, "probe-timeout", DefaultProbeTimeout, "how long GET /v2/ at --mirror may take; 0 means the default, negative skips the probe")
	fs.BoolVar(&opts.reportOnly, "report-only", false, "print the problems but exit 0 (for a pod's init step)")
	return fs, func() (doctorOptions, error) {
		host, insecure, err := parseMirrorHost(*m)
		if err != nil {
			return opts, err
		}
		opts.mirror = "https://" + host
		if insecure {
			opts.mirror = "http://" + host
		}
		if opts.file == "" {
			return opts, usagef("--containerd-config: must not be empty")
		}
		if opts.hostsDir == "" {
			return opts, usagef("--hosts-dir: must not be empty")
		}
		if opts.probeTimeout == 0 {
			opts.probeTimeout = DefaultProbeTimeout
		}
		for _, r := range registries.Values {
			name, err := registryName(r)
			if err != nil {
				return opts, usagef("--registry %q: %v", r, err)
			}
			opts.registries = append(opts.registries, name)
		}
		return opts, nil
	}
}

// containerdProblems reads containerd's effective configuration, from
// `containerd config dump` where the binary is found, else from file, and
// returns what would send CRI pulls around hostsDir. It says on out what
// it read; a configuration it cannot read is itself a problem.
func containerdProblems(ctx context.Context, file, bin, hostsDir string, out io.Writer) []ctrdconf.Problem {
	c, v, source, err := inspectContainerd(ctx, file, bin)
	if err != nil {
		return []ctrdconf.Problem{{Setting: file, Detail: err.Error(), Fix: "make containerd's configuration load (`containerd config dump` shows why not)"}}
	}
	fmt.Fprintf(out, "read: %s (containerd %s, config version %d)\n", source, v, c.Version)
	if len(c.Imports) > 0 && source == file {
		fmt.Fprintf(out, "note: %s imports %v, which only `containerd config dump` merges\n", file, c.Imports)
	}
	return ctrdconf.Check(c, v, hostsDir)
}

// inspectContainerd returns containerd's configuration and version, and
// where it read them. Without a binary, the version is unknown and the
// file is read as it is.
func inspectContainerd(ctx context.Context, file, bin string) (ctrdconf.Config, ctrdconf.Version, string, error) {
	path := ""
	if bin != "" {
		path, _ = exec.LookPath(bin)
	}
	var v ctrdconf.Version
	if path != "" {
		var err error
		if v, err = ctrdconf.BinaryVersion(ctx, path, 0); err != nil {
			return ctrdconf.Config{}, v, "", err
		}
	}
	// containerd runs with its defaults when the file is missing, but
	// the config dump of 1.x refuses a missing file.
	if _, err := os.Stat(file); path == "" || errors.Is(err, os.ErrNotExist) {
		c, err := ctrdconf.ReadFile(file, v)
		return c, v, file, err
	}
	dump, err := ctrdconf.Dump(ctx, path, file, 0)
	if err != nil {
		return ctrdconf.Config{}, v, "", err
	}
	c, err := ctrdconf.Parse(dump)
	return c, v, "`" + path + " --config " + file + " config dump`", err
}

// probeMirror asks nodecache for /v2/ as containerd would.
func probeMirror(ctx context.Context, mirror string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mirror+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET /v2/: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: status %d, want 200", resp.StatusCode)
	}
	return nil
}
