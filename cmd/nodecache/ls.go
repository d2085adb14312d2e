package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"nodecache/internal/settings"
	"nodecache/pkg/daemon"
	"nodecache/pkg/pin"
)

// clientEnv: ls, evict and prefetch read NODECACHE_<FLAG> too
// (NODECACHE_ADMIN, NODECACHE_MIRROR); serve has no flags of those names.
const clientEnv settings.Env = serveEnv

// adminTimeout bounds one call to the admin API. Listing walks every
// manifest on disk, a second or so for a large store; a minute leaves room
// on a loaded node and still ends a call to a daemon that hangs.
const adminTimeout = time.Minute

// maxAdminErrorBody bounds the error answer read for its message: the
// OCI error JSON is a few hundred bytes.
const maxAdminErrorBody = 64 << 10

// adminClient talks to a running daemon's admin API, which is served on
// its --metrics-listen address only.
type adminClient struct {
	client *http.Client
	base   string
}

// addAdminFlag defines --admin, whose default is the daemon's
// NODECACHE_METRICS_LISTEN when that is set.
func addAdminFlag(fs *flag.FlagSet) *string {
	return fs.String("admin", os.Getenv("NODECACHE_METRICS_LISTEN"),
		"the running daemon's --metrics-listen address (http://host:port, host:port or unix:///path), where its admin API is served; default $NODECACHE_METRICS_LISTEN")
}

func newAdminClient(addr string) (*adminClient, error) {
	if addr == "" {
		return nil, usagef("--admin: required: the daemon's --metrics-listen address (the admin API is served there only)")
	}
	client, base, err := pin.NewClient(addr)
	if err != nil {
		return nil, usagef("--admin %v", err)
	}
	client.Timeout = adminTimeout
	return &adminClient{client: client, base: base}, nil
}

// call sends a request to the admin API and decodes its JSON answer into
// out; an error answer becomes an error with its message.
func (a *adminClient) call(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, maxAdminErrorBody)).Decode(&e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("%s", e.Errors[0].Message)
		}
		return fmt.Errorf("admin API %s %s: %s (is --admin the daemon's --metrics-listen address?)", method, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// ls lists what a running daemon holds.
func ls(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	admin := addAdminFlag(fs)
	asJSON := fs.Bool("json", false, "print the admin API's JSON as it is")
	if err := parseFlags(fs, clientEnv, args, stderr, "nodecache ls [--admin ADDR] [--json]"); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	c, err := newAdminClient(*admin)
	if err != nil {
		return err
	}
	var res struct {
		Images []daemon.ImageView `json:"images"`
	}
	if err := c.call(ctx, http.MethodGet, "/admin/images", nil, &res); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printImages(stdout, res.Images)
	return nil
}

// printImages prints one row per name of each image (one for an image
// without a name).
func printImages(w io.Writer, images []daemon.ImageView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tLAST USED\tPINNED")
	for _, img := range images {
		names := img.Names
		if len(names) == 0 {
			names = []string{"<none>"}
		}
		size := daemon.FormatBytes(img.Bytes)
		if img.Missing > 0 {
			size += fmt.Sprintf(" (%d missing)", img.Missing)
		}
		pinned := ""
		if img.Pinned {
			pinned = "pinned"
		}
		d := img.Digest.String()
		if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
			d = d[:i+13]
		}
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, d, size, img.LastUsed.UTC().Format(time.RFC3339), pinned)
		}
	}
	tw.Flush()
}
