package mirror

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// env is one nodecache in front of one real registry, all in-process.
type env struct {
	t      *testing.T
	up     *registrytest.Registry
	store  *diskstore.Store
	srv    *httptest.Server // nodecache
	mirror *Server
	dials  atomic.Int64 // outbound connection attempts by the upstream client
	// arrived gets a value for each request that reaches nodecache, while
	// it has room; tests that wait for clients drain it.
	arrived chan struct{}
	// served gets a value each time nodecache's handler has returned, so
	// its access log and metrics are written.
	served chan struct{}
	now    atomic.Pointer[time.Time]
}

func newEnv(t *testing.T, upOpts []registrytest.Option, opts ...Option) *env {
	t.Helper()
	return newEnvStore(t, nil, upOpts, opts...)
}

// newEnvStore is newEnv with options for the store.
func newEnvStore(t *testing.T, storeOpts []diskstore.Option, upOpts []registrytest.Option, opts ...Option) *env {
	t.Helper()
	store, err := diskstore.Open(t.TempDir(), storeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	return newEnvOn(t, store, upOpts, opts...)
}

// newEnvOn is newEnv with a store the test opened itself.
func newEnvOn(t *testing.T, store *diskstore.Store, upOpts []registrytest.Option, opts ...Option) *env {
	t.Helper()
	return newEnvClient(t, store, upOpts, nil, opts...)
}

// newEnvClient is newEnvOn with options for nodecache's upstream client.
func newEnvClient(t *testing.T, store *diskstore.Store, upOpts []registrytest.Option, clientOpts []upstream.Option, opts ...Option) *env {
	t.Helper()
	e := &env{t: t, up: registrytest.Start(t, upOpts...), arrived: make(chan struct{}, 1024), served: make(chan struct{}, 1024), store: store}
	start := time.Unix(1_700_000_000, 0)
	e.now.Store(&start)
	client, err := upstream.New(map[string]string{e.up.Host(): e.up.URL()},
		append([]upstream.Option{upstream.WithDialHook(func(context.Context, string, string) { e.dials.Add(1) })}, clientOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	base := []Option{
		WithAllowList([]string{e.up.Host()}),
		WithDefaultRegistry(e.up.Host()),
		WithClock(func() time.Time { return *e.now.Load() }),
	}
	m := New(e.store, client, append(base, opts...)...)
	e.mirror = m
	// After the server below stops and before the upstream does: end the
	// fills still running and close the store, so nothing writes into the
	// test's directory while it is removed.
	t.Cleanup(func() {
		m.Close()
		e.store.Close()
	})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case e.arrived <- struct{}{}:
		default:
		}
		m.ServeHTTP(w, r)
		select {
		case e.served <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) advance(d time.Duration) {
	next := e.now.Load().Add(d)
	e.now.Store(&next)
}

// url returns nodecache's URL for path, with ns set to the upstream the way
// containerd sends it.
func (e *env) url(path string) string {
	return e.srv.URL + path + "?ns=" + e.up.Host()
}

// do sends one request to nodecache and returns the response with its body
// read.
func (e *env) do(method, url string, header http.Header) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return send(e.t, req)
}

// send sends req and returns the response with its body read.
func send(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// wantError checks an OCI error answer.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	if !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Fatalf("error body %s, want code %s", body, code)
	}
}
