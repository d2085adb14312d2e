// Package settings fills a flag.FlagSet in three layers: the command line
// wins over environment variables, which win over a TOML settings file.
// A flag's variable is a command's prefix plus the flag's name upper-cased
// with dashes as underscores (--data-dir with prefix NODECACHE_ is
// NODECACHE_DATA_DIR); a settings file is keyed by the flag names.
//
// It knows no flag of its own: which flags exist, and which prefix each
// command reads, is cmd/nodecache's business. Errors name the variable or
// the file and setting, in one line; turning them into usage errors is
// the caller's.
package settings

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// List is a repeatable flag. Its first Set replaces the defaults. From
// the environment, values are separated by commas; in a settings file it
// takes an array of strings.
type List struct {
	Values []string
	set    bool // replaced the defaults
}

// NewList is a List holding defaults until it is set.
func NewList(defaults ...string) *List { return &List{Values: defaults} }

func (l *List) String() string { return strings.Join(l.Values, ",") }

func (l *List) Set(v string) error {
	if !l.set {
		l.Values, l.set = nil, true
	}
	l.Values = append(l.Values, v)
	return nil
}

// Env is the prefix of one command's environment variables, such as
// NODECACHE_.
type Env string

// Name returns the environment variable that sets flag name.
func (e Env) Name(flagName string) string {
	return string(e) + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets every flag not given on the command line from its
// environment variable, if that is set. Flags win over the environment.
func (e Env) Apply(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(e.Name(f.Name))
		if given[f.Name] || !ok || err != nil {
			return
		}
		parts := []string{v}
		if _, isList := f.Value.(*List); isList {
			parts = strings.Split(v, ",")
		}
		for _, p := range parts {
			if serr := fs.Set(f.Name, strings.TrimSpace(p)); serr != nil {
				err = fmt.Errorf("%s: %w", e.Name(f.Name), serr)
				return
			}
		}
	})
	return err
}

// Usage prints fs's flags, sorted, with their defaults and environment
// variables, to fs.Output().
func (e Env) Usage(fs *flag.FlagSet, synopsis string) {
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
		fmt.Fprintf(out, "\n\tenv %s\n", e.Name(n))
	}
}
