package mirror

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestClientHasTheBlobBeforeItsCommit: a cold blob's clients get the
// whole answer, a Range of it and a client joining late included, while
// the fill's fsync and rename are still held back. The commit then
// completes, and the blob was fetched once.
func TestClientHasTheBlobBeforeItsCommit(t *testing.T) {
	reached, proceed, durable := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
	hook := diskstore.WithStepHook(func(st diskstore.Step) {
		switch st {
		case diskstore.StepSynced:
			reached <- struct{}{}
			<-proceed
		case diskstore.StepDirSynced:
			durable <- struct{}{}
		}
	})
	e := newEnvStore(t, []diskstore.Option{hook}, nil)
	data := registrytest.Random(11, 3<<20)
	d := e.up.PushBlob(t, "test/app", data)
	url := e.url("/v2/test/app/blobs/" + d.String())

	got := make(chan []byte, 1)
	go func() {
		resp, body := e.do(http.MethodGet, url, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d", resp.StatusCode)
		}
		got <- body
	}()
	<-reached // verified, commit pending
	select {
	case body := <-got:
		if !bytes.Equal(body, data) {
			t.Fatalf("first client got %d bytes, want the %d of the blob", len(body), len(data))
		}
	case <-time.After(30 * time.Second): // bounds a failing test only
		close(proceed)
		t.Fatal("the client did not get the last byte before the commit")
	}
	// Stat would wait for the commit; Lookup tells.
	if found, err := e.store.Lookup(d); err != nil || found.Presence != diskstore.BeingFilled {
		t.Fatalf("Lookup while the commit is held = %v, %v; want BeingFilled", found.Presence, err)
	}
	resp, body := e.do(http.MethodGet, url, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("a client joining during the commit: status %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = e.do(http.MethodGet, url, http.Header{"Range": {"bytes=0-99"}})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[:100]) {
		t.Fatalf("a Range during the commit: status %d, %d bytes", resp.StatusCode, len(body))
	}

	close(proceed)
	<-durable
	if _, err := e.store.Stat(d); err != nil {
		t.Fatalf("after the commit: %v", err)
	}
	if n := e.up.BlobGets(d); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

// TestBlobRefilledAfterAFailedCommit: the commit of a verified fill
// fails (its temporary file is gone before the rename). The client still
// gets the whole blob; the blob is not stored, and the next request
// fetches it again and stores it.
func TestBlobRefilledAfterAFailedCommit(t *testing.T) {
	dir := t.TempDir()
	var failed atomic.Bool
	hook := diskstore.WithStepHook(func(st diskstore.Step) {
		if st != diskstore.StepReleased || failed.Swap(true) {
			return
		}
		names, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		for _, n := range names {
			os.Remove(filepath.Join(dir, "tmp", n.Name()))
		}
	})
	store, err := diskstore.Open(dir, hook)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, store, nil)
	data := registrytest.Random(12, 2<<20)
	d := e.up.PushBlob(t, "test/app", data)
	url := e.url("/v2/test/app/blobs/" + d.String())

	resp, body := e.do(http.MethodGet, url, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes; want 200 and the blob", resp.StatusCode, len(body))
	}
	e.mirror.fills.Wait() // the failed commit is over
	if _, err := e.store.Stat(d); err == nil {
		t.Fatal("a blob whose commit failed is stored")
	}

	resp, body = e.do(http.MethodGet, url, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("again: status %d, %d bytes; want 200 and the blob", resp.StatusCode, len(body))
	}
	e.mirror.fills.Wait()
	if _, err := e.store.Stat(d); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if n := e.up.BlobGets(d); n != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2", n)
	}
}
