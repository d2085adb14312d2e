package mirror

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// testStallWindow is the upstream stall window of these tests. A real
// timer: a spurious expiry under load only costs one more resume, or
// fails a fill that is meant to fail anyway.
const testStallWindow = 200 * time.Millisecond

// stallTestBound bounds a failing test only: without a stall window a
// client would wait for the fill timeout.
const stallTestBound = 10 * time.Second

// getBody GETs url on ctx and reads the whole answer.
func getBody(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func newStallEnv(t *testing.T) *env {
	t.Helper()
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newEnvClient(t, store, nil, []upstream.Option{upstream.WithStallTimeout(testStallWindow)})
}

// TestStalledUpstreamResumes: the first upstream answer sends part of the
// blob and then nothing; after the stall window the fill resumes by Range
// from a second answer and the client gets the whole blob.
func TestStalledUpstreamResumes(t *testing.T) {
	e := newStallEnv(t)
	data := registrytest.Random(41, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	path := "/v2/test/app/blobs/" + d.String()
	var mu sync.Mutex // guards ranges
	var ranges []string
	hold := e.up.Stall(300_000, registrytest.NewGate(), nil)
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != path {
			return false
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		return first && hold(w, r)
	})
	ctx, cancel := context.WithTimeout(t.Context(), stallTestBound)
	defer cancel()
	status, body, err := getBody(ctx, e.url(path))
	if err != nil || status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes, equal %v, err %v", status, len(body), bytes.Equal(body, data), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) < 2 || ranges[0] != "" || ranges[1] != "bytes=300000-" {
		t.Fatalf("upstream GETs had Range %q, want none then bytes=300000-", ranges)
	}
}

// TestStalledUpstreamAbortsClients: every upstream answer stalls, so the
// fill fails once the resume budget is spent, and every client waiting on
// it has its connection aborted: none gets a complete 200, and none is
// left waiting for the fill timeout.
func TestStalledUpstreamAbortsClients(t *testing.T) {
	e := newStallEnv(t)
	data := registrytest.Random(43, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	e.up.SetFault(e.up.Stall(100_000, registrytest.NewGate(), registrytest.Route(http.MethodGet, registrytest.KindBlobs)))
	ctx, cancel := context.WithTimeout(t.Context(), stallTestBound)
	defer cancel()
	const clients = 3
	errs := make(chan error, clients)
	for range clients {
		go func() {
			status, body, err := getBody(ctx, e.url("/v2/test/app/blobs/"+d.String()))
			if err == nil && status == http.StatusOK {
				t.Errorf("a client got a complete 200 of %d bytes (equal %v)", len(body), bytes.Equal(body, data))
			}
			errs <- err
		}()
	}
	for range clients {
		err := <-errs
		if ctx.Err() != nil {
			t.Fatalf("a client was still waiting after %s: %v", stallTestBound, err)
		}
		if err == nil {
			t.Error("a client's answer ended without an error")
		}
	}
	if _, err := e.store.Stat(d); err == nil {
		t.Error("a stalled blob was committed")
	}
}
