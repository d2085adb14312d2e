package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/pkg/pin"
)

func TestProgress(t *testing.T) {
	ref := pin.Ref{Registry: "r.example", Repository: "a/b", Tag: "v1"}
	blob := ocispec.Descriptor{Digest: digest.FromString("layer"), Size: 1000}
	img := pin.Image{Ref: ref, Root: digest.FromString("m"),
		Manifests: []ocispec.Descriptor{{Digest: digest.FromString("m"), Size: 100}},
		Blobs:     []ocispec.Descriptor{blob}}

	var lines strings.Builder
	p := newProgress(&lines) // not a terminal: a line per blob
	p.image(ref, img)
	p.add(1000)
	p.blob(ref, blob, nil)
	p.blob(ref, blob, errors.New("boom"))
	want := "r.example/a/b:v1: " + img.Root.String() + ", 1 manifests, 1 blobs, 1.074KiB\n" +
		"ok r.example/a/b:v1 " + blob.Digest.String() + " 1000B\n" +
		"FAILED r.example/a/b:v1 " + blob.Digest.String() + ": boom\n"
	if lines.String() != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", lines.String(), want)
	}

	var bar strings.Builder
	b := &barProgress{w: &bar}
	b.image(ref, img)
	for range 1000 {
		b.add(1)
	}
	b.blob(ref, blob, nil)
	out := bar.String()
	// Redrawn once per whole percentage, not once per read.
	if n := strings.Count(out, "\r"); n > 101 {
		t.Fatalf("%d redraws for 1000 reads", n)
	}
	if !strings.Contains(out, "100% 1.074KiB/1.074KiB") || !strings.HasSuffix(out, "\n") || !strings.Contains(out, "["+strings.Repeat("=", barWidth)+"]") {
		t.Fatalf("bar output %q", out[max(0, len(out)-120):])
	}
}
