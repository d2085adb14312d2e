package main

import (
	"flag"
	"io"

	"nodecache/internal/settings"
)

// Each command reads its own environment variables, so that a setting for
// one never breaks another: serve and verify read NODECACHE_<FLAG> (verify
// acts on serve's own store, so NODECACHE_DATA_DIR means the same to
// both); hosts reads NODECACHE_HOSTS_CMD_<FLAG>, since its --registry and
// --dir mean something else than serve's.
const (
	serveEnv  settings.Env = "NODECACHE_"
	verifyEnv settings.Env = serveEnv
	hostsEnv  settings.Env = "NODECACHE_HOSTS_CMD_"
)

// parseFlags parses args into fs quietly, then sets every flag not given
// from the environment variables of env: a mistake is one line naming the
// flag, and only --help prints the full list, headed by synopsis.
// Arguments left after the flags are the caller's to judge.
func parseFlags(fs *flag.FlagSet, env settings.Env, args []string, stderr io.Writer, synopsis string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stderr)
			env.Usage(fs, synopsis)
			return err
		}
		return usagef("%v", err)
	}
	if err := env.Apply(fs); err != nil {
		return usagef("%v", err)
	}
	return nil
}
