package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
	"nodecache/pkg/pin"
)

const prefetchSynopsis = "nodecache prefetch [--mirror ADDR] [--admin ADDR] [--platform P]... REF..."

// prefetch caches whole images through a running daemon: it walks each
// image through the mirror, reads every blob to its end (checking its
// digest), then asks the daemon's admin API whether every manifest and
// blob is committed in its store. It succeeds only if all are.
func prefetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	mirrorAddr := fs.String("mirror", "http://"+daemon.DefaultListen, "the running daemon's mirror address (--listen): http://host:port, host:port or unix:///path")
	admin := addAdminFlag(fs)
	platformList := &settings.List{}
	fs.Var(platformList, "platform", "platform to fetch from a multi-platform image, such as linux/amd64; repeatable; default every platform")
	if err := parseFlags(fs, clientEnv, args, stderr, prefetchSynopsis); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("an image reference is required: %s", prefetchSynopsis)
	}
	var refs []pin.Ref
	for _, a := range fs.Args() {
		r, err := pin.ParseRef(a)
		if err != nil {
			return usagef("%v", err)
		}
		refs = append(refs, r)
	}
	var match platforms.Matcher
	if len(platformList.Values) > 0 {
		var ps []ocispec.Platform
		for _, v := range platformList.Values {
			p, err := platforms.Parse(v)
			if err != nil {
				return usagef("--platform %q: want os/arch[/variant], such as linux/amd64: %v", v, err)
			}
			ps = append(ps, p)
		}
		match = platforms.Any(ps...)
	}
	src, err := pin.NewHTTPSource(*mirrorAddr)
	if err != nil {
		return usagef("--mirror %v", err)
	}
	c, err := newAdminClient(*admin)
	if err != nil {
		return err
	}
	return runPrefetch(ctx, src, c, refs, match, newProgress(stdout))
}

// runPrefetch fetches refs and confirms them with the daemon.
func runPrefetch(ctx context.Context, src *pin.HTTPSource, c *adminClient, refs []pin.Ref, match platforms.Matcher, p progress) error {
	var all []digest.Digest
	failed := 0
	for _, ref := range refs {
		img, err := pin.Walk(ctx, src, ref, match)
		if err != nil {
			p.line("FAILED %s: %v", ref, err)
			failed++
			continue
		}
		p.image(ref, img)
		for _, b := range img.Blobs {
			err := src.Pull(ctx, ref, b, p.add)
			p.blob(ref, b, err)
			if err != nil {
				failed++
			}
		}
		all = append(all, img.Digests()...)
	}
	missing, err := confirm(ctx, c, all)
	if err != nil {
		return fmt.Errorf("confirming with the daemon: %w", err)
	}
	for _, d := range missing {
		p.line("NOT IN THE STORE %s (it streamed uncached: no room within --max-size and --min-free, or it failed)", d)
	}
	if failed > 0 || len(missing) > 0 {
		return fmt.Errorf("%d failed, %d of %d manifests and blobs not in the store", failed, len(missing), len(all))
	}
	p.line("all %d manifests and blobs of %d images are in the store, verified", len(all), len(refs))
	return nil
}

// confirm asks the daemon which of ds its store does not hold.
func confirm(ctx context.Context, c *adminClient, ds []digest.Digest) ([]digest.Digest, error) {
	var missing []digest.Digest
	for len(ds) > 0 {
		n := min(len(ds), confirmBatch)
		body, _ := json.Marshal(daemon.CommittedRequest{Digests: ds[:n]})
		var res daemon.CommittedResponse
		if err := c.call(ctx, http.MethodPost, "/admin/committed", bytes.NewReader(body), &res); err != nil {
			return nil, err
		}
		missing = append(missing, res.Missing...)
		ds = ds[n:]
	}
	return missing, nil
}

// confirmBatch is how many digests one question to the daemon carries:
// 5,000 of at most 140 bytes each stays well under the daemon's 1 MiB
// bound on a request body.
const confirmBatch = 5000

// isTerminal reports whether w is a terminal, for a progress bar.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
