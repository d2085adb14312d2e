package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/daemon"
	"nodecache/pkg/diskstore"
)

// errBadEntries makes verify exit non-zero when it removed anything.
var errBadEntries = errors.New("the store held bad entries; they were removed")

// verify re-hashes every entry of a store that no daemon is using.
func verify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data-dir", defaultDataDir(), "directory of the cache store")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stderr)
			usage(fs, "nodecache verify [--data-dir DIR]  (stop the daemon first)")()
			return err
		}
		return usagef("%v", err)
	}
	if err := applyEnv(fs); err != nil {
		return usagef("%v", err)
	}
	res, err := diskstore.Verify(*dataDir, func(d digest.Digest, err error) {
		fmt.Fprintf(stdout, "bad %s: %v (removed)\n", d, err)
	})
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", *dataDir, err)
	}
	fmt.Fprintf(stdout, "verified %d entries (%s): %d bad\n", res.Checked, daemon.FormatBytes(res.Bytes), res.Bad)
	if res.Bad > 0 {
		return errBadEntries
	}
	return nil
}
