package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

// TestTagsSurviveKill9: a tag pulled through the daemon is resolved by the
// next daemon on the same data directory after a kill -9, with the
// registry gone: the record reached the disk within its flush interval,
// and the manifest is served from the store.
func TestTagsSurviveKill9(t *testing.T) {
	bin := daemontest.Binary(t)
	up := registrytest.Start(t)
	img := up.PushImage(t, "test/app", "v1", 100)
	data := t.TempDir()
	args := []string{"--data-dir", data, "--registry", up.Host() + "=" + up.URL(), "--allow-registry", up.Host(),
		"--default-registry", up.Host()}

	first := start(t, bin, args)
	if status, body := getTag(t, first.URL); status != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
		t.Fatalf("first daemon: status %d", status)
	}
	waitForRecord(t, filepath.Join(data, "tags", "tags.log"), img.Index.Encoded())
	// The manifest's commit (fsync, rename) follows the release of its
	// last byte to the client: a kill before it would leave the tag with
	// nothing to point at, as documented. Wait for the committed file.
	hex := img.Index.Encoded()
	waitForRecord(t, filepath.Join(data, "blobs", "sha256", hex[:2], hex), "")
	if err := first.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Stop() // reaps it; a killed process is an error here
	up.Close()

	second := start(t, bin, args)
	status, body := getTag(t, second.URL)
	if status != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
		t.Fatalf("after kill -9, registry gone: status %d, %s", status, body)
	}
}

func start(t *testing.T, bin string, args []string) *daemontest.Process {
	t.Helper()
	p, err := daemontest.Start(t.Context(), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- output of nodecache (pid %d) ---\n%s", p.Cmd.Process.Pid, p.Output())
		}
	})
	return p
}

func getTag(t *testing.T, base string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v2/test/app/manifests/v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// waitForRecord waits until the file at path exists and holds want, which
// the daemon writes within its flush interval (the tag log) or once a
// fill is committed (a store entry); the deadline only bounds a failing
// test.
func waitForRecord(t *testing.T, path, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(want)) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%q never reached %s", want, path)
		case <-tick.C:
		}
	}
}
