package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// envPrefix is prepended to a flag's name, upper-cased with dashes as
// underscores, to find its environment variable: --data-dir is
// NODECACHE_DATA_DIR.
const envPrefix = "NODECACHE_"

// listFlag is a repeatable flag. From the environment, values are
// separated by commas.
type listFlag struct {
	values []string
	set    bool // replaced the defaults
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }

func (l *listFlag) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	l.values = append(l.values, v)
	return nil
}

// envName returns the environment variable that sets a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// environment variable, if that is set. Flags win over the environment.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if given[f.Name] || !ok || err != nil {
			return
		}
		parts := []string{v}
		if _, isList := f.Value.(*listFlag); isList {
			parts = strings.Split(v, ",")
		}
		for _, p := range parts {
			if serr := fs.Set(f.Name, strings.TrimSpace(p)); serr != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), serr)
				return
			}
		}
	})
	return err
}

// parseFlags parses args into fs quietly, then sets every flag not given
// from the environment: a mistake is one line naming the flag, and only
// --help prints the full list, headed by synopsis. Arguments left after
// the flags are the caller's to judge.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, synopsis string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stderr)
			usage(fs, synopsis)()
			return err
		}
		return usagef("%v", err)
	}
	if err := applyEnv(fs); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// usage prints a flag set's flags with their environment variables.
func usage(fs *flag.FlagSet, synopsis string) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: %s\n\n", synopsis)
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		sort.Strings(names)
		for _, n := range names {
			f := fs.Lookup(n)
			fmt.Fprintf(out, "  --%s\n\t%s", n, f.Usage)
			if f.DefValue != "" && f.DefValue != "[]" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(out, "\n\tenv %s\n", envName(n))
		}
	}
}
