package main

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
)

// Where the demo image lives in the upstream.
const (
	demoRepo = "demo/app"
	demoTag  = "v1"
)

// startUpstream starts the in-process registry, throttled to rate bytes per
// second (0: unthrottled), and pushes a multi-arch image to it: an OCI index
// over linux/amd64 and linux/arm64, each with a config and one random layer
// per size. The registry is closed by tb's cleanup if the caller does not
// close it first.
func startUpstream(tb testing.TB, rate int64, layerSizes []int64) (reg *registrytest.Registry, img registrytest.Image, err error) {
	// registrytest reports failures with tb.Fatal; standaloneTB turns
	// that into a panic, which ends here as an error.
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(tbFatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("start upstream: %w", f)
		}
	}()
	reg = registrytest.Start(tb, registrytest.WithThrottle(rate))
	img = reg.PushImage(tb, demoRepo, demoTag, layerSizes...)
	return reg, img, nil
}

// blobBytesSent returns how many blob bytes reg sent since its counts were
// last reset: each of img's layers and configs, times the GETs for it. A
// GET cut short counts in full; the demo's upstream is never cut.
func blobBytesSent(reg *registrytest.Registry, img registrytest.Image) int64 {
	var n int64
	for p, layers := range img.Layers {
		for _, d := range slices.Concat(layers, []digest.Digest{img.Configs[p]}) {
			n += int64(reg.BlobGets(d)) * int64(len(img.Blobs[d]))
		}
	}
	return n
}

// tbFatal is the panic value of standaloneTB's Fatal.
type tbFatal struct{ msg string }

func (f tbFatal) Error() string { return f.msg }

// standaloneTB lets main use registrytest, whose helpers take a
// testing.TB, outside a test. It implements the methods registrytest
// calls; the embedded nil interface only supplies testing.TB's unexported
// method, so any other method panics with a nil dereference, which is
// loud rather than wrong.
type standaloneTB struct {
	testing.TB
	ctx      context.Context
	cleanups []func()
}

func newStandaloneTB(ctx context.Context) *standaloneTB {
	return &standaloneTB{ctx: ctx}
}

func (t *standaloneTB) Helper()                  {}
func (t *standaloneTB) Name() string             { return "demo" }
func (t *standaloneTB) Context() context.Context { return t.ctx }
func (t *standaloneTB) Cleanup(f func())         { t.cleanups = append(t.cleanups, f) }
func (t *standaloneTB) Logf(string, ...any)      {}
func (t *standaloneTB) FailNow()                 { panic(tbFatal{msg: "FailNow"}) }
func (t *standaloneTB) Fatal(args ...any)        { panic(tbFatal{msg: fmt.Sprint(args...)}) }
func (t *standaloneTB) Fatalf(format string, args ...any) {
	panic(tbFatal{msg: fmt.Sprintf(format, args...)})
}

// cleanup runs the registered cleanups, last registered first, as the
// testing package does.
func (t *standaloneTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}
