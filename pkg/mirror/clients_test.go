package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerdResolver returns containerd's own resolver, configured from a
// hosts.toml directory exactly as containerd reads it, with nodecache as
// the mirror of the upstream registry.
func containerdResolver(t *testing.T, e *env) remotes.Resolver {
	t.Helper()
	dir := t.TempDir()
	hostsToml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", e.up.URL(), e.srv.URL)
	if err := os.MkdirAll(filepath.Join(dir, e.up.Host()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, e.up.Host(), "hosts.toml"), []byte(hostsToml), 0o644); err != nil {
		t.Fatal(err)
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(dir)}),
	})
}

// pullAll resolves ref and fetches the index, every manifest, config and
// layer, checking each against its descriptor's digest and size.
func pullAll(ctx context.Context, r remotes.Resolver, ref string) (fetched int, err error) {
	name, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		return 0, fmt.Errorf("resolve: %w", err)
	}
	f, err := r.Fetcher(ctx, name)
	if err != nil {
		return 0, err
	}
	todo := []ocispec.Descriptor{desc}
	for len(todo) > 0 {
		d := todo[0]
		todo = todo[1:]
		b, err := fetchVerified(ctx, f, d)
		if err != nil {
			return fetched, err
		}
		fetched++
		switch d.MediaType {
		case ocispec.MediaTypeImageIndex:
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				return fetched, err
			}
			todo = append(todo, idx.Manifests...)
		case ocispec.MediaTypeImageManifest:
			var m ocispec.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				return fetched, err
			}
			todo = append(todo, m.Config)
			todo = append(todo, m.Layers...)
		}
	}
	return fetched, nil
}

func fetchVerified(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) ([]byte, error) {
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.Digest, err)
	}
	if got := digest.FromBytes(b); got != d.Digest || int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%s: got %s, %d bytes; want %d bytes", d.Digest, got, len(b), d.Size)
	}
	return b, nil
}

// TestPullWithContainerdResolver pulls a multi-arch image through nodecache
// with containerd's resolver and fetcher, then again with the upstream
// down: the second pull is served from the cache alone.
func TestPullWithContainerdResolver(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "team/app", "v1", 300_000, 1<<20)
	ref := e.up.Host() + "/team/app:v1"
	ctx := context.Background()

	n, err := pullAll(ctx, containerdResolver(t, e), ref)
	if err != nil {
		t.Fatal(err)
	}
	// index + 2 × (manifest + config + 2 layers)
	if want := 1 + 2*4; n != want {
		t.Fatalf("fetched %d objects, want %d", n, want)
	}
	for d := range img.Blobs {
		if e.up.BlobGets(d) > 1 {
			t.Fatalf("upstream served %s %d times", d, e.up.BlobGets(d))
		}
	}
	if e.up.Count(http.MethodGet, "blobs") == 0 {
		t.Fatal("no blob went through nodecache: containerd did not use the mirror")
	}

	e.up.Close()
	e.advance(time.Hour) // the tag is stale: resolution must fall back to the last answer
	if n, err = pullAll(ctx, containerdResolver(t, e), ref); err != nil {
		t.Fatalf("pull with upstream down: %v", err)
	}
	if n != 9 {
		t.Fatalf("second pull fetched %d objects, want 9", n)
	}
}

func TestPullWithGoContainerRegistry(t *testing.T) {
	e := newEnv(t, nil)
	e.up.PushImage(t, "team/app", "v2", 200_000, 50_000)
	// A client pointed straight at nodecache sends no ns: the default
	// registry (here the test upstream) is used.
	ref, err := name.ParseReference(strings.TrimPrefix(e.srv.URL, "http://")+"/team/app:v2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrPull(ref); err != nil {
		t.Fatalf("first pull: %v", err)
	}
	blobGets := e.up.Count(http.MethodGet, "blobs")
	if err := ggcrPull(ref); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if n := e.up.Count(http.MethodGet, "blobs"); n != blobGets {
		t.Fatalf("second pull fetched %d blobs upstream, want 0", n-blobGets)
	}
}

// ggcrPull pulls an index with go-containerregistry: validate checks the
// manifests and configs (Fast, because the test layers are random bytes,
// not gzip archives), and reading every layer through ggcr's verifying
// reader checks each layer's digest.
func ggcrPull(ref name.Reference) error {
	idx, err := remote.Index(ref)
	if err != nil {
		return err
	}
	if err := validate.Index(idx, validate.Fast); err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}
