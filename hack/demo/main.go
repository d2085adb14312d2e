// Command demo shows nodecache at work on a machine with no network. It
// starts an in-process upstream registry holding a generated multi-arch
// image, runs the real nodecache binary in front of it, and pulls the image
// through nodecache with containerd's own resolver three times: cold, warm,
// and with the upstream stopped.
//
// It is what `make demo` runs. It is a demonstration, not a benchmark (see
// `make bench`), and not an end-to-end test with a real containerd (see
// `make e2e`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const (
	// defaultRateMiB is the upstream's bandwidth in MiB/s, about what a
	// node gets from a public registry on a good day. Unthrottled, the
	// in-process upstream answers at memory speed and a cold pull looks
	// no slower than a warm one.
	defaultRateMiB = 80
	// defaultSmallLayerMiB and defaultLargeLayerMiB are the layers of each
	// platform, 24 MiB in all: large enough that the throttled cold pull
	// takes a visible fraction of a second, small enough that the demo
	// runs in about a second.
	defaultSmallLayerMiB = 4
	defaultLargeLayerMiB = 8
)

func main() {
	bin := flag.String("nodecache", "bin/nodecache", "the nodecache binary to run (make demo builds it)")
	rate := flag.Int64("rate", defaultRateMiB, "upstream bandwidth in MiB/s; 0 is unthrottled")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	tb := newStandaloneTB(ctx)
	_, err := demo(ctx, tb, options{
		nodecache:  *bin,
		rate:       *rate << 20,
		layerSizes: []int64{defaultSmallLayerMiB << 20, defaultLargeLayerMiB << 20},
		out:        os.Stdout,
	})
	tb.cleanup()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}
