// Command nodecache is a per-node pull-through cache for OCI registries,
// used by containerd as a registry mirror.
//
//	nodecache serve [flags]     run the daemon
//	nodecache hosts [flags]     write containerd hosts.toml files that use nodecache
//	nodecache containers-conf [flags]
//	                            write a containers-registries.conf drop-in that uses nodecache
//	nodecache doctor [flags]    check that containerd's pulls would reach nodecache
//	nodecache verify [flags]    re-hash the store offline, removing bad entries
//	nodecache prefetch [flags] REF...  cache whole images through a running daemon
//	nodecache ls [flags]        list the images a running daemon holds
//	nodecache evict [flags] REF...     remove images from a running daemon's store
//	nodecache version           print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"nodecache/pkg/daemon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodecache:", err)
		os.Exit(exitCode(err))
	}
}

// usageError is a mistake in the command line or the settings; it exits
// with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode is 2 for a usage error, ours or a setting the daemon refused,
// and 1 for anything else.
func exitCode(err error) int {
	var u *usageError
	var c *daemon.ConfigError
	if errors.As(err, &u) || errors.As(err, &c) {
		return 2
	}
	return 1
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("a command is required: serve, hosts, containers-conf, doctor, verify, prefetch, ls, evict or version")
	}
	switch args[0] {
	case "serve":
		cfg, err := parseServe(args[1:], stderr)
		if err != nil {
			return err
		}
		return run(ctx, cfg)
	case "hosts":
		return hosts(ctx, args[1:], stdout, stderr)
	case "containers-conf":
		return containersConfCmd(args[1:], stdout, stderr)
	case "doctor":
		return doctor(ctx, args[1:], stdout, stderr)
	case "verify":
		return verify(args[1:], stdout, stderr)
	case "prefetch":
		return prefetch(ctx, args[1:], stdout, stderr)
	case "ls":
		return ls(ctx, args[1:], stdout, stderr)
	case "evict":
		return evict(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "nodecache", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: nodecache serve|hosts|verify|version|containers-conf|doctor [flags]; nodecache prefetch|ls|evict [flags] talk to a running daemon; nodecache serve --help lists every flag")
		return nil
	default:
		return usagef("unknown command %q: want serve, hosts, containers-conf, doctor, verify, prefetch, ls, evict or version", args[0])
	}
}
