package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr string
		want addrClass
	}{
		{"8.8.8.8", classPublic},
		{"1.1.1.1", classPublic},
		{"172.15.255.255", classPublic},
		{"172.32.0.1", classPublic},
		{"169.253.255.255", classPublic},
		{"2001:4860:4860::8888", classPublic},
		{"127.0.0.1", classLoopback},
		{"127.0.0.2", classLoopback},
		{"127.255.255.254", classLoopback},
		{"::1", classLoopback},
		{"10.0.0.1", classPrivate},
		{"10.255.255.255", classPrivate},
		{"172.16.0.1", classPrivate},
		{"172.31.255.255", classPrivate},
		{"192.168.0.1", classPrivate},
		{"192.168.255.255", classPrivate},
		{"fc00::1", classPrivate},
		{"fd12:3456::1", classPrivate},
		{"169.254.169.254", classLinkLocal},
		{"169.254.0.1", classLinkLocal},
		{"fe80::1", classLinkLocal},
		{"febf::1", classLinkLocal},
		{"0.0.0.0", classUnspecified},
		{"0.1.2.3", classUnspecified},
		{"::", classUnspecified},
		{"224.0.0.1", classMulticast},
		{"239.255.255.250", classMulticast},
		{"255.255.255.255", classMulticast},
		{"ff02::1", classMulticast},
		{"ff05::2", classMulticast},
		// IPv4-mapped IPv6 is the IPv4 address it carries.
		{"::ffff:127.0.0.1", classLoopback},
		{"::ffff:10.1.2.3", classPrivate},
		{"::ffff:169.254.169.254", classLinkLocal},
		{"::ffff:192.168.1.1", classPrivate},
		{"::ffff:0.0.0.0", classUnspecified},
		{"::ffff:224.0.0.1", classMulticast},
		{"::ffff:8.8.8.8", classPublic},
		// Shared address space (CGNAT; Alibaba Cloud's metadata service is
		// 100.100.100.200), IETF protocol assignments, benchmarking.
		{"100.64.0.1", classPrivate},
		{"100.100.100.200", classPrivate},
		{"100.127.255.255", classPrivate},
		{"100.63.255.255", classPublic},
		{"100.128.0.0", classPublic},
		{"192.0.0.1", classPrivate},
		{"192.0.0.170", classPrivate},
		{"192.0.1.1", classPublic},
		{"198.18.0.1", classPrivate},
		{"198.19.255.255", classPrivate},
		{"198.17.255.255", classPublic},
		{"198.20.0.0", classPublic},
		{"::ffff:100.100.100.200", classPrivate},
		// NAT64 (64:ff9b::/96) is the IPv4 address it carries.
		{"64:ff9b::a9fe:a9fe", classLinkLocal},
		{"64:ff9b::7f00:1", classLoopback},
		{"64:ff9b::10.0.0.1", classPrivate},
		{"64:ff9b::100.100.100.200", classPrivate},
		{"64:ff9b::0.0.0.0", classUnspecified},
		{"64:ff9b::224.0.0.1", classMulticast},
		{"64:ff9b::8.8.8.8", classPublic},
		{"64:ff9b:0:0:0:1::1", classPublic},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := classify(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("classify(%s) = %s, want %s", tt.addr, got, tt.want)
			}
		})
	}
}

// target is a listener redirects point at; it counts the connections it
// accepts and answers every request with a body nobody outside may see.
type target struct {
	srv     *httptest.Server
	accepts atomic.Int64
}

const internalBody = `{"name":"internal","tags":["secret"]}`

func newTarget(t *testing.T, addr string) *target {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	tg := &target{}
	tg.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, internalBody)
	}))
	tg.srv.Listener = l
	tg.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			tg.accepts.Add(1)
		}
	}
	tg.srv.Start()
	t.Cleanup(tg.srv.Close)
	return tg
}

// redirector is a registry that answers everything with a redirect to to.
func redirector(t *testing.T, to string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.RedirectHandler(to, http.StatusTemporaryRedirect))
	t.Cleanup(srv.Close)
	return srv
}

func tagsRequest() Request {
	return Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindTags, Method: http.MethodGet}
}

// TestRedirectWithinLoopback: a registry configured on loopback (as every
// test registry is) may redirect within loopback.
func TestRedirectWithinLoopback(t *testing.T) {
	tg := newTarget(t, "127.0.0.2:0")
	reg := redirector(t, tg.srv.URL+"/list")
	c := newTestClient(t, reg.URL)
	resp, err := c.Fetch(testCtx(t), tagsRequest())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != internalBody {
		t.Fatalf("status %d, body %q: the redirect within loopback was not followed", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(c.guard.refused.WithLabelValues(refusedInternal)); got != 0 {
		t.Errorf("refusals counted: %v, want 0", got)
	}
}

// TestRedirectToInternalRefused: a registry whose address class is public
// (forced here, since tests run on loopback) that redirects to an
// internal address gets no connection made to it, whatever the route:
// tags/list would otherwise relay the internal body in full.
//
// A target named by its IP address is refused before the redirect is
// followed (a pooled connection to it would skip the dial); a target
// named by a host name is refused at dial time, on the address it
// resolves to.
func TestRedirectToInternalRefused(t *testing.T) {
	for _, name := range []string{"127.0.0.1", "localhost"} {
		t.Run(name, func(t *testing.T) {
			tg := newTarget(t, "127.0.0.1:0")
			u, err := url.Parse(tg.srv.URL + "/list")
			if err != nil {
				t.Fatal(err)
			}
			u.Host = net.JoinHostPort(name, u.Port())
			reg := redirector(t, u.String())
			c := newTestClient(t, reg.URL, withEndpointClasses(func(context.Context, string) (classSet, error) {
				return classSet(0).with(classPublic), nil
			}))
			resp, err := c.Fetch(testCtx(t), tagsRequest())
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("Fetch followed the redirect: status %d, body %q", resp.StatusCode, body)
			}
			if !errors.Is(err, ErrRedirectRefused) || !errors.Is(err, ErrUnreachable) {
				t.Errorf("err = %v, want ErrRedirectRefused and ErrUnreachable", err)
			}
			if n := tg.accepts.Load(); n != 0 {
				t.Errorf("the internal target accepted %d connections, want 0", n)
			}
			if got := testutil.ToFloat64(c.guard.refused.WithLabelValues(refusedInternal)); got != 1 {
				t.Errorf("refusals counted: %v, want 1 (a refusal is not retried)", got)
			}
		})
	}
}

// TestRedirectDowngradeRefused: an https registry that redirects to http
// is refused before any connection to the target.
func TestRedirectDowngradeRefused(t *testing.T) {
	tg := newTarget(t, "127.0.0.1:0")
	reg := httptest.NewTLSServer(http.RedirectHandler(tg.srv.URL+"/list", http.StatusTemporaryRedirect))
	t.Cleanup(reg.Close)
	c := newTestClient(t, reg.URL, WithTransport(reg.Client().Transport))
	resp, err := c.Fetch(testCtx(t), tagsRequest())
	if err == nil {
		resp.Body.Close()
		t.Fatalf("Fetch followed an https to http redirect: status %d", resp.StatusCode)
	}
	if !errors.Is(err, ErrRedirectRefused) {
		t.Errorf("err = %v, want ErrRedirectRefused", err)
	}
	if n := tg.accepts.Load(); n != 0 {
		t.Errorf("the http target accepted %d connections, want 0", n)
	}
	if got := testutil.ToFloat64(c.guard.refused.WithLabelValues(refusedDowngrade)); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
}

// TestRedirectToPooledInternalRefused: the node holds an idle connection
// to an internal registry it is configured for; a public registry that
// redirects to it must not get that connection reused, which no dial
// check would see. The redirect names the internal registry by address,
// or by a host name (resolved and checked before it is followed).
func TestRedirectToPooledInternalRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen string
		url    func(srvURL string) string // the internal registry's URL, also the redirect's target
	}{
		{"by address", "127.0.0.2:0", func(u string) string { return u }},
		{"by name", "127.0.0.1:0", func(u string) string { return "http://localhost:" + u[strings.LastIndexByte(u, ':')+1:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, tc.listen)
			internalURL := tc.url(tg.srv.URL)
			reg := redirector(t, internalURL+"/list")
			const internal = "internal.test"
			c, err := New(map[string]string{testRegistry: reg.URL, internal: internalURL},
				WithSleep(new(sleeps).sleep),
				withEndpointClasses(func(ctx context.Context, host string) (classSet, error) {
					if host == "127.0.0.1" { // the redirecting registry counts as public
						return classSet(0).with(classPublic), nil
					}
					return resolvedClasses(ctx, host)
				}))
			if err != nil {
				t.Fatal(err)
			}
			r := tagsRequest()
			r.Registry = internal
			resp, err := c.Fetch(testCtx(t), r)
			if err != nil {
				t.Fatalf("the internal registry itself: %v", err)
			}
			_, _ = io.ReadAll(resp.Body) // read to the end, so the connection is pooled
			resp.Body.Close()

			resp, err = c.Fetch(testCtx(t), tagsRequest())
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("Fetch followed the redirect: status %d, body %q", resp.StatusCode, body)
			}
			if !errors.Is(err, ErrRedirectRefused) {
				t.Errorf("err = %v, want ErrRedirectRefused", err)
			}
			if n := tg.accepts.Load(); n != 1 {
				t.Errorf("the internal registry accepted %d connections, want 1 (its own fetch)", n)
			}
		})
	}
}

// TestHostsMirrorRedirectToInternalRefused: a hosts.toml mirror (public,
// as forced here) that redirects to an internal address gets no
// connection made there; the registry's server is asked instead.
func TestHostsMirrorRedirectToInternalRefused(t *testing.T) {
	tg := newTarget(t, "127.0.0.1:0")
	mirror := redirector(t, tg.srv.URL+"/list")
	server := registrytest.Start(t)
	server.PushSingleImage(t, "team/app", "v1", 10)
	dir := writeHosts(t, testRegistry, fmt.Sprintf(`server = %q

[host.%q]
  capabilities = ["pull", "resolve"]
`, server.URL(), mirror.URL))
	c, err := New(nil, WithHostsDir(dir, nil), WithSleep(new(sleeps).sleep),
		withEndpointClasses(func(context.Context, string) (classSet, error) {
			return classSet(0).with(classPublic), nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Fetch(testCtx(t), tagsRequest())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), "secret") {
		t.Fatalf("status %d, body %q: want the server's tags", resp.StatusCode, body)
	}
	if n := tg.accepts.Load(); n != 0 {
		t.Errorf("the internal target accepted %d connections, want 0", n)
	}
	if got := testutil.ToFloat64(c.guard.refused.WithLabelValues(refusedInternal)); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
}
