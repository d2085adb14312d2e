package main

import (
	"fmt"
	"io"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/pkg/daemon"
	"nodecache/pkg/pin"
)

// progress shows what prefetch does: a bar per image on a terminal, one
// line per blob otherwise (a log, a pod's output).
type progress interface {
	image(ref pin.Ref, img pin.Image)                  // an image walked; its blobs follow
	add(n int64)                                       // bytes of the current blob read
	blob(ref pin.Ref, b ocispec.Descriptor, err error) // a blob read, or failed
	line(format string, args ...any)                   // a line of its own
}

func newProgress(w io.Writer) progress {
	if isTerminal(w) {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w}
}

// lineProgress prints a line per image and per blob.
type lineProgress struct{ w io.Writer }

func (p *lineProgress) image(ref pin.Ref, img pin.Image) {
	fmt.Fprintf(p.w, "%s: %s, %d manifests, %d blobs, %s\n", ref, img.Root, len(img.Manifests), len(img.Blobs), daemon.FormatBytes(img.Size()))
}
func (p *lineProgress) add(int64) {}
func (p *lineProgress) blob(ref pin.Ref, b ocispec.Descriptor, err error) {
	if err != nil {
		fmt.Fprintf(p.w, "FAILED %s %s: %v\n", ref, b.Digest, err)
		return
	}
	fmt.Fprintf(p.w, "ok %s %s %s\n", ref, b.Digest, daemon.FormatBytes(b.Size))
}
func (p *lineProgress) line(format string, args ...any) { fmt.Fprintf(p.w, format+"\n", args...) }

// barWidth is the bar's width in characters: it fits an 80-column
// terminal with the reference and the byte counts.
const barWidth = 30

// barProgress redraws one line per image, when the whole percentage
// changes, so that a fast pull does not flood the terminal.
type barProgress struct {
	w           io.Writer
	ref         pin.Ref
	done, total int64
	shown       int // percentage last drawn; -1 for none
}

func (p *barProgress) image(ref pin.Ref, img pin.Image) {
	p.ref, p.done, p.total, p.shown = ref, img.Size()-blobBytes(img), img.Size(), -1
	p.draw()
	if len(img.Blobs) == 0 {
		fmt.Fprintln(p.w)
	}
}

func blobBytes(img pin.Image) int64 {
	var n int64
	for _, b := range img.Blobs {
		n += b.Size
	}
	return n
}

func (p *barProgress) add(n int64) {
	p.done += n
	p.draw()
}

func (p *barProgress) blob(ref pin.Ref, b ocispec.Descriptor, err error) {
	if err != nil {
		fmt.Fprintf(p.w, "\nFAILED %s %s: %v\n", ref, b.Digest, err)
		p.shown = -1
		return
	}
	if p.done >= p.total {
		fmt.Fprintln(p.w)
	}
}

func (p *barProgress) line(format string, args ...any) { fmt.Fprintf(p.w, format+"\n", args...) }

func (p *barProgress) draw() {
	pct := 100
	if p.total > 0 {
		pct = int(min(p.done, p.total) * 100 / p.total)
	}
	if pct == p.shown {
		return
	}
	p.shown = pct
	filled := pct * barWidth / 100
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %s/%s", p.ref, strings.Repeat("=", filled), strings.Repeat(" ", barWidth-filled),
		pct, daemon.FormatBytes(min(p.done, p.total)), daemon.FormatBytes(p.total))
}
