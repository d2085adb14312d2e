package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxManifestSize bounds what is read into memory to parse an index or a
// manifest; registries commonly refuse manifests above 4 MiB.
const maxManifestSize = 4 << 20

// writeHostsDir writes a containerd hosts directory (what config_path and
// ctr --hosts-dir point at) in which the registry upstreamHost is mirrored
// by nodecache at mirrorURL, with the registry itself as the fallback, as
// hosts.toml.example does for Docker Hub. It returns the
// directory.
func writeHostsDir(dir, upstreamHost, mirrorURL string) (string, error) {
	root := filepath.Join(dir, "certs.d")
	hostDir := filepath.Join(root, upstreamHost)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return "", err
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		"http://"+upstreamHost, mirrorURL)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return "", err
	}
	return root, nil
}

// hostBytes counts response body bytes read by containerd's clients, split
// into those from nodecache and those from anywhere else. containerd falls
// back to the hosts.toml server when the mirror fails, so a pull can
// succeed without nodecache; the split shows whether it did.
type hostBytes struct {
	mirrorHost string // host:port of nodecache
	mirror     atomic.Int64
	other      atomic.Int64
}

// wrap is a config.UpdateClientFunc: it puts a counting transport in front
// of each client containerd builds from the hosts directory.
func (h *hostBytes) wrap(c *http.Client) error {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		n := &h.other
		if req.URL.Host == h.mirrorHost {
			n = &h.mirror
		}
		resp.Body = &countingBody{ReadCloser: resp.Body, n: n}
		return resp, nil
	})
	return nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// newResolver returns containerd's registry resolver configured from the
// hosts directory, as containerd's CRI plugin and ctr --hosts-dir
// configure it. A new one per pull starts with no connections or tokens,
// like a pull on a node that has not talked to the registry yet.
func newResolver(ctx context.Context, hostsDir string, counter *hostBytes) remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{
			HostDir:      config.HostDirFromRoot(hostsDir),
			UpdateClient: counter.wrap,
		}),
	})
}

// pullResult is what one pull fetched.
type pullResult struct {
	root    digest.Digest // what the tag resolved to
	resolve time.Duration // how long resolving the tag took
	objects int           // indexes, manifests, configs and layers fetched
	bytes   int64         // their total size
}

// pullAll resolves ref and fetches everything under it, for every
// platform: the index, each manifest, its config and its layers, checking
// each against the digest and size its parent gave. It is what
// `ctr content fetch --all-platforms` does, without a content store.
func pullAll(ctx context.Context, r remotes.Resolver, ref string) (pullResult, error) {
	start := time.Now()
	name, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		return pullResult{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	res := pullResult{root: desc.Digest, resolve: time.Since(start)}
	f, err := r.Fetcher(ctx, name)
	if err != nil {
		return pullResult{}, err
	}
	todo := []ocispec.Descriptor{desc}
	for len(todo) > 0 {
		d := todo[0]
		todo = todo[1:]
		children, err := fetchVerified(ctx, f, d)
		if err != nil {
			return res, err
		}
		res.objects++
		res.bytes += d.Size
		todo = append(todo, children...)
	}
	return res, nil
}

// fetchVerified fetches d, checks its digest and size while reading, and
// returns the descriptors it references if it is an index or a manifest.
func fetchVerified(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s %s: %w", d.MediaType, d.Digest, err)
	}
	defer rc.Close()
	isIndex, isManifest := images.IsIndexType(d.MediaType), images.IsManifestType(d.MediaType)
	if (isIndex || isManifest) && d.Size > maxManifestSize {
		return nil, fmt.Errorf("%s: %d bytes, above the %d-byte limit for manifests", d.Digest, d.Size, maxManifestSize)
	}
	var body bytes.Buffer
	v := d.Digest.Verifier()
	var w io.Writer = v
	if isIndex || isManifest {
		w = io.MultiWriter(v, &body)
	}
	// One byte more than the descriptor's size, so a longer body shows.
	n, err := io.Copy(w, io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.Digest, err)
	}
	if n != d.Size {
		return nil, fmt.Errorf("%s: got %d bytes, want %d", d.Digest, n, d.Size)
	}
	if !v.Verified() {
		return nil, fmt.Errorf("%s: the bytes do not match the digest", d.Digest)
	}
	switch {
	case isIndex:
		var idx ocispec.Index
		if err := json.Unmarshal(body.Bytes(), &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", d.Digest, err)
		}
		return idx.Manifests, nil
	case isManifest:
		var m ocispec.Manifest
		if err := json.Unmarshal(body.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		return append([]ocispec.Descriptor{m.Config}, m.Layers...), nil
	}
	return nil, nil
}
