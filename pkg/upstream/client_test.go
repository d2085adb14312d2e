package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestUnreachable(t *testing.T) {
	var dials atomic.Int64
	hook := func(context.Context, string, string) { dials.Add(1) }
	var sl sleeps
	c, err := New(map[string]string{"dead.test": "http://" + closedAddr(t)}, WithDialHook(hook), WithSleep(sl.sleep))
	if err != nil {
		t.Fatal(err)
	}
	holdProbes(t, c) // the request marks the registry down; its probe would dial too
	r := manifestRequest("x/y", "v1")
	r.Registry = "dead.test"
	_, err = c.Do(testCtx(t), r)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), "dead.test") {
		t.Errorf("error %q does not name the registry", err)
	}
	if n := dials.Load(); n != maxAttempts {
		t.Errorf("dials = %d, want %d (retried within the budget)", n, maxAttempts)
	}
	if n := len(sl.get()); n != maxAttempts-1 {
		t.Errorf("waits = %d, want %d", n, maxAttempts-1)
	}
}

func TestRealmUnreachable(t *testing.T) {
	reg := newBearerRegistry(t, "http://"+closedAddr(t)+"/token", &okHandler{})
	c := newTestClient(t, reg.srv.URL)
	_, err := c.Do(testCtx(t), manifestRequest("x/y", "v1"))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), testRegistry) {
		t.Fatalf("err = %v, want ErrUnreachable naming %s", err, testRegistry)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	c := newTestClient(t, srv.URL, WithResponseHeaderTimeout(50*time.Millisecond))
	_, err := c.Do(testCtx(t), manifestRequest("x/y", "v1"))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}

func TestCallerCancelIsNotUnreachable(t *testing.T) {
	srv := httptest.NewServer(&okHandler{})
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Do(ctx, manifestRequest("x/y", "v1"))
	if errors.Is(err, ErrUnreachable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled and not ErrUnreachable", err)
	}
}

func TestHeaders(t *testing.T) {
	h := &okHandler{}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL, WithUserAgent("nodecache/1.2.3"))
	r := manifestRequest("x/y", "v1")
	r.Header = http.Header{
		"Accept":        {"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"},
		"Range":         {"bytes=0-9"},
		"Authorization": {"Basic Y2xpZW50OnNlY3JldA=="},
		"Cookie":        {"a=b"},
		"User-Agent":    {"containerd/2"},
	}
	mustDo(t, c, r)
	got := h.lastRequest().Header
	want := map[string]string{
		"Accept":          "application/vnd.oci.image.index.v1+json",
		"Range":           "bytes=0-9",
		"Authorization":   "",
		"Cookie":          "",
		"User-Agent":      "nodecache/1.2.3",
		"Accept-Encoding": "",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, got.Get(k), v)
		}
	}
	if n := len(got.Values("Accept")); n != 2 {
		t.Errorf("Accept values = %d, want 2", n)
	}
}

func TestOptionConflicts(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{"dial hook with transport", []Option{WithTransport(http.DefaultTransport), WithDialHook(func(context.Context, string, string) {})}},
		{"nil clock", []Option{WithClock(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(nil, tt.opts...); err == nil {
				t.Error("New succeeded, want error")
			}
		})
	}
}
