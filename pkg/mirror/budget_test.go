package mirror

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// TestSilentUpstreamAnswersWithinBudget: an upstream that accepts
// connections and never answers costs a client no more than the
// first-response budget, and the client gets an OCI error rather than
// nothing: with the defaults, three attempts of 15 s would outlast
// containerd's 30 s wait.
func TestSilentUpstreamAnswersWithinBudget(t *testing.T) {
	const budget = 300 * time.Millisecond
	l := listenLocal(t)
	var accepts atomic.Int64
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	host := l.Addr().String()
	client, err := upstream.New(map[string]string{host: "http://" + host},
		upstream.WithFirstResponseBudget(budget), upstream.WithResponseHeaderTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(store, client, WithAllowList([]string{host}), WithDefaultRegistry(host)))
	t.Cleanup(srv.Close)

	// Bounds a failing test only.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, path := range []string{"/v2/team/app/blobs/" + digest.FromString("x").String(), "/v2/team/app/manifests/v1"} {
		accepts.Store(0)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path+"?ns="+host, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusServiceUnavailable, ocierr.CodeUnavailable)
		// Attempt 2 starts after 200 ms; a third could not start before
		// 400 ms, past the budget.
		if n := accepts.Load(); n < 1 || n > 2 {
			t.Errorf("%s: %d attempts, want 1 or 2 within a %s budget", path, n, budget)
		}
	}
}
