package daemon

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nodecache/internal/registrytest"
)

// TestTagTTLZeroAsksUpstreamEveryTime pins what --tag-ttl 0 means to the
// daemon: every tag request asks upstream. To the mirror's option a zero
// would mean its 30 s default instead, so the daemon must translate it.
func TestTagTTLZeroAsksUpstreamEveryTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tagTTL time.Duration
		want   int // upstream manifest requests for two HEADs of the tag
	}{
		{"zero asks every time", 0, 2},
		{"an hour asks once", time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := registrytest.Start(t)
			img := up.PushSingleImage(t, "team/app", "v1", 1<<10)
			cfg := testConfig(t, up)
			cfg.TagTTL = tc.tagTTL
			d := start(t, cfg)
			url := "http://" + d.Addrs().Mirror[0] + "/v2/team/app/manifests/v1"
			for i := range 2 {
				if code := headManifest(t, url); code != http.StatusOK {
					t.Fatalf("HEAD %d of the tag: status %d", i+1, code)
				}
			}
			got := up.ManifestRequests(http.MethodHead) + up.ManifestRequests(http.MethodGet)
			if got != tc.want {
				t.Errorf("--tag-ttl %v: upstream saw %d manifest requests for two HEADs of %s:%s, want %d", tc.tagTTL, got, img.Repo, img.Tag, tc.want)
			}
		})
	}
}

// TestTTLZeroKeepsIdleContent pins what --ttl 0 means to the daemon: no
// idle expiry. A blob last used two days ago (its file's mtime, which the
// store reads back at start as its last use) is served from the cache
// with --ttl 0, and fetched again with --ttl 1h.
func TestTTLZeroKeepsIdleContent(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want int // upstream GETs of the blob: the first pull, and a refetch
	}{
		{"zero keeps it", 0, 1},
		{"an hour expires it", time.Hour, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := registrytest.Start(t)
			blob := up.PushBlob(t, "team/app", registrytest.Random(4, 4<<10))
			cfg := testConfig(t, up)
			cfg.TTL = tc.ttl
			pull := func() {
				t.Helper()
				d := start(t, cfg)
				code, body := get(t, "http://"+d.Addrs().Mirror[0]+"/v2/team/app/blobs/"+blob.String())
				if code != http.StatusOK || digest.FromString(body) != blob {
					t.Fatalf("pull: status %d, content %s", code, digest.FromString(body))
				}
				if err := d.stop(t); err != nil {
					t.Fatal(err)
				}
			}
			pull()
			old := time.Now().Add(-48 * time.Hour)
			if err := os.Chtimes(blobFile(t, cfg.DataDir, blob), old, old); err != nil {
				t.Fatal(err)
			}
			pull()
			if got := up.BlobGets(blob); got != tc.want {
				t.Errorf("--ttl %v: upstream saw %d GETs of a blob idle for two days, want %d", tc.ttl, got, tc.want)
			}
		})
	}
}

// headManifest sends HEAD url accepting an OCI image manifest, as a
// client resolving a tag does.
func headManifest(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// blobFile finds the file of d under the store's root: it is named by
// d's encoded part.
func blobFile(t *testing.T, root string, d digest.Digest) string {
	t.Helper()
	var found string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() == d.Encoded() {
			found = path
		}
		return err
	})
	if err != nil || found == "" {
		t.Fatalf("no file for %s under %s (%v)", d, root, err)
	}
	return found
}
