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

// verifyFlags defines verify's one flag, the data directory serve uses.
func verifyFlags() (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	return fs, fs.String("data-dir", daemon.DefaultDataDir(), "directory of the cache store")
}

// verify re-hashes every entry of a store that no daemon is using.
func verify(args []string, stdout, stderr io.Writer) error {
	fs, dataDir := verifyFlags()
	if err := parseFlags(fs, verifyEnv, args, stderr, "nodecache verify [--data-dir DIR]  (stop the daemon first)"); err != nil {
		return err
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
