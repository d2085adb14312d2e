package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/daemon"
	"nodecache/pkg/pin"
)

// evict removes an image from a running daemon's store: its entries that
// no other cached image uses and no pin holds.
func evict(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("evict", flag.ContinueOnError)
	admin := addAdminFlag(fs)
	if err := parseFlags(fs, clientEnv, args, stderr, "nodecache evict [--admin ADDR] REF...  (REF: registry/repository:tag, ...@digest, or a bare digest from ls --json)"); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("an image reference is required: nodecache evict registry/repository:tag")
	}
	for _, a := range fs.Args() {
		if _, err := digest.Parse(a); err == nil {
			continue // a bare digest, as ls --json shows it
		}
		if _, err := pin.ParseRef(a); err != nil {
			return usagef("%v", err)
		}
	}
	c, err := newAdminClient(*admin)
	if err != nil {
		return err
	}
	failed := 0
	for _, a := range fs.Args() {
		var res daemon.EvictResult
		if err := c.call(ctx, http.MethodPost, "/admin/evict?ref="+url.QueryEscape(a), nil, &res); err != nil {
			fmt.Fprintf(stderr, "nodecache: evict %s: %v\n", a, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "evicted %s: %d entries, %s; %d kept, used by other images or pinned\n",
			a, res.Deleted, daemon.FormatBytes(res.Bytes), res.Shared)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images not evicted", failed, fs.NArg())
	}
	return nil
}
