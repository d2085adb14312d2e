package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// twoUp is nodecache in front of two registries, up.test and other.test,
// each a real in-process registry, and docker.io served by a third, with
// no default registry: every request must name its registry.
type twoUp struct {
	t              *testing.T
	up, other, hub *registrytest.Registry
	srv            *httptest.Server
	metrics        *Metrics
	log            *accessLog
	served         chan struct{} // a value each time the handler returned
	mirror         *Server
}

func newTwoUp(t *testing.T, opts ...Option) *twoUp {
	t.Helper()
	e := &twoUp{t: t, up: registrytest.Start(t), other: registrytest.Start(t), hub: registrytest.Start(t),
		metrics: NewMetrics(), log: newAccessLog(), served: make(chan struct{}, 64)}
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(map[string]string{"up.test": e.up.URL(), "other.test": e.other.URL(), "docker.io": e.hub.URL()})
	if err != nil {
		t.Fatal(err)
	}
	base := []Option{WithAllowList([]string{"up.test", "other.test", "docker.io"}), WithDefaultRegistry(NoDefaultRegistry),
		WithLogger(e.log.logger()), WithMetrics(e.metrics)}
	e.mirror = New(store, client, append(base, opts...)...)
	t.Cleanup(func() {
		e.mirror.Close()
		store.Close()
	})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { e.served <- struct{}{} }() // also when the handler aborts
		e.mirror.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// get sends a GET of path to nodecache, with Accept for an index, and
// waits until its handler has returned, so its access line is written.
func (e *twoUp) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, body := send(e.t, req)
	within(e.t, e.served, "the handler's return")
	return resp, body
}

// TestPathRegistryKeepsRegistriesApart: two registries hold a repository
// of the same name with different images. Each form of naming the
// registry, in the path and in ns, gets that registry's own bytes, and
// both forms share one cache: the second form asks upstream nothing.
func TestPathRegistryKeepsRegistriesApart(t *testing.T) {
	e := newTwoUp(t)
	imgs := map[string]registrytest.Image{
		"up.test":    e.up.PushImage(t, "demo/app", "v1", 3000),
		"other.test": e.other.PushImage(t, "demo/app", "v1", 5000),
	}
	ups := map[string]*registrytest.Registry{"up.test": e.up, "other.test": e.other}
	for _, form := range []struct {
		name string
		path func(registry, rest string) string
	}{
		{"path", func(registry, rest string) string { return "/v2/" + registry + "/demo/app/" + rest }},
		{"ns", func(registry, rest string) string { return "/v2/demo/app/" + rest + "?ns=" + registry }},
	} {
		for registry, img := range imgs {
			t.Run(form.name+"/"+registry, func(t *testing.T) {
				resp, body := e.get(form.path(registry, "manifests/v1"))
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.Index.String() ||
					!bytes.Equal(body, img.Blobs[img.Index]) {
					t.Fatalf("index: %d %s, want %s of %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), img.Index, registry)
				}
				layer := img.Layers["linux/amd64"][0]
				resp, body = e.get(form.path(registry, "blobs/"+layer.String()))
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[layer]) {
					t.Fatalf("layer: %d, %d bytes; want %s's %d", resp.StatusCode, len(body), registry, len(img.Blobs[layer]))
				}
				if n := ups[registry].BlobGets(layer); n != 1 {
					t.Fatalf("%s served the layer %d times, want once for both forms", registry, n)
				}
			})
		}
	}
	for registry, up := range ups {
		if n := up.ManifestRequests(http.MethodHead) + up.ManifestRequests(http.MethodGet); n > 2 {
			t.Errorf("%s got %d manifest requests for one tag and one index, want at most 2: the forms share the tag record", registry, n)
		}
	}
}

// TestPathRegistryRefusals: requests that name a registry badly are
// refused with the OCI error a client can act on, and reach no upstream.
func TestPathRegistryRefusals(t *testing.T) {
	e := newTwoUp(t)
	e.up.PushImage(t, "demo/app", "v1", 3000)
	tests := []struct {
		name, path string
		status     int
		code       string
		inMessage  string
		registry   string // in the access line
	}{
		{"path and ns disagree", "/v2/other.test/demo/app/manifests/v1?ns=up.test", http.StatusBadRequest, ocierr.CodeNameInvalid, "name one registry", "other.test"},
		{"no registry, default none", "/v2/demo/app/manifests/v1", http.StatusNotFound, ocierr.CodeNameUnknown, "--default-registry", ""},
		{"path registry not allowed", "/v2/evil.test/demo/app/manifests/v1", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry evil.test", "evil.test"},
		{"ns not allowed", "/v2/demo/app/manifests/v1?ns=evil.test", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry evil.test", "evil.test"},
		{"ns not allowed, long", "/v2/demo/app/manifests/v1?ns=" + strings.Repeat("x", 8000), http.StatusForbidden, ocierr.CodeDenied, "--allow-registry xxx", strings.Repeat("x", 80) + "..."},
		{"path registry with a port not allowed", "/v2/up.test:5000/demo/app/manifests/v1?ns=up.test", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry up.test:5000", "up.test:5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.get(tt.path)
			wantError(t, resp, body, tt.status, tt.code)
			if !strings.Contains(string(body), tt.inMessage) {
				t.Fatalf("body %s, want it to name %q", body, tt.inMessage)
			}
			line := e.log.last(t)
			if line["registry"] != tt.registry || line["repository"] == "" || line["status"] != strconv.Itoa(tt.status) {
				t.Fatalf("access line %v, want registry %q, the repository and status %d", line, tt.registry, tt.status)
			}
		})
	}
	if n := e.up.Count(http.MethodGet, "manifests") + e.up.Count(http.MethodHead, "manifests") +
		e.other.Count(http.MethodGet, "manifests") + e.other.Count(http.MethodHead, "manifests"); n != 0 {
		t.Fatalf("%d manifest requests reached upstream, want none", n)
	}
	if n := testutil.ToFloat64(e.metrics.noRegistry); n != 1 {
		t.Fatalf("nodecache_requests_without_registry_total = %v, want 1", n)
	}
}

// TestDockerHubNames: docker.io/alpine in the path, and library/alpine
// with ns, are the same image, from the same tag record, logged under
// the name Docker Hub knows it by.
func TestDockerHubNames(t *testing.T) {
	e := newTwoUp(t)
	img := e.hub.PushImage(t, "library/alpine", "3", 1000)
	for _, path := range []string{
		"/v2/docker.io/alpine/manifests/3",
		"/v2/library/alpine/manifests/3?ns=docker.io",
		"/v2/alpine/manifests/3?ns=docker.io",
		"/v2/docker.io/library/alpine/manifests/3",
	} {
		resp, _ := e.get(path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.Index.String() {
			t.Fatalf("%s: %d %s, want %s", path, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), img.Index)
		}
		if line := e.log.last(t); line["repository"] != "library/alpine" || line["registry"] != "docker.io" {
			t.Fatalf("%s: access line %v, want docker.io library/alpine", path, line)
		}
	}
	if n := e.hub.ManifestRequests(http.MethodHead) + e.hub.ManifestRequests(http.MethodGet); n > 2 {
		t.Fatalf("%d manifest requests upstream for four requests of one tag, want at most 2", n)
	}
}

// TestPullWithCraneThroughPathRegistry: go-containerregistry, pointed
// straight at nodecache with 127.0.0.1:PORT/up.test/demo/app, pulls
// up.test's image, and 127.0.0.1:PORT/other.test/demo/app other.test's.
func TestPullWithCraneThroughPathRegistry(t *testing.T) {
	e := newTwoUp(t)
	imgs := map[string]registrytest.Image{
		"up.test":    e.up.PushImage(t, "demo/app", "v1", 200_000, 3000),
		"other.test": e.other.PushImage(t, "demo/app", "v1", 100_000),
	}
	host := strings.TrimPrefix(e.srv.URL, "http://")
	for registry, img := range imgs {
		ref, err := name.ParseReference(host+"/"+registry+"/demo/app:v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := ggcrPull(ref); err != nil {
			t.Fatalf("pull of %s: %v", ref, err)
		}
		desc, err := remote.Head(ref)
		if err != nil || desc.Digest.String() != img.Index.String() {
			t.Fatalf("%s resolves to %v (%v), want %s's index %s", ref, desc, err, registry, img.Index)
		}
	}
}

// TestTagListPagesStayWithTheRegistry: the next page of a tag list,
// followed as the Link header says (crane, regctl and skopeo do), comes
// from the registry the first page came from, never from the default
// registry's repository of the same name.
func TestTagListPagesStayWithTheRegistry(t *testing.T) {
	e := newTwoUp(t, WithDefaultRegistry("up.test"))
	for _, tag := range []string{"a1", "a2", "a3"} {
		e.other.PushImage(t, "demo/app", tag, 100)
	}
	for _, tag := range []string{"u1", "u2", "u3"} {
		e.up.PushImage(t, "demo/app", tag, 100)
	}
	for _, first := range []string{
		"/v2/other.test/demo/app/tags/list?n=1",
		"/v2/demo/app/tags/list?n=1&ns=other.test",
	} {
		next, seen := first, []string{}
		for next != "" && len(seen) < 5 {
			resp, body := e.get(next)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d, %s", next, resp.StatusCode, body)
			}
			var list struct{ Tags []string }
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatalf("%s: %v", next, err)
			}
			seen = append(seen, list.Tags...)
			next = ""
			if link := resp.Header.Get("Link"); link != "" {
				target, _, _ := strings.Cut(strings.TrimPrefix(link, "<"), ">")
				u, err := resp.Request.URL.Parse(target)
				if err != nil {
					t.Fatalf("Link %q: %v", link, err)
				}
				next = u.RequestURI()
			}
		}
		if got := strings.Join(seen, ","); got != "a1,a2,a3" {
			t.Errorf("pages from %s: %s, want other.test's a1,a2,a3", first, got)
		}
	}
}

// TestSameRegistryLinks: which Link headers get the registry back, and
// how; a link that does not come back to nodecache is left alone.
func TestSameRegistryLinks(t *testing.T) {
	inPath := &request{registry: "docker.io", route: route{host: "docker.io", name: "library/alpine"}}
	byNs := &request{registry: "ghcr.io", route: route{name: "org/app"}}
	tests := []struct {
		q          *request
		link, want string
	}{
		{inPath, `</v2/library/alpine/tags/list?last=3&n=1>; rel="next"`, `</v2/docker.io/library/alpine/tags/list?last=3&n=1>; rel="next"`},
		{byNs, `</v2/org/app/tags/list?n=1&last=v1>; rel="next"`, `</v2/org/app/tags/list?last=v1&n=1&ns=ghcr.io>; rel="next"`},
		{byNs, `<https://ghcr.io/v2/org/app/tags/list?last=v1>; rel="next"`, `<https://ghcr.io/v2/org/app/tags/list?last=v1>; rel="next"`},
		{inPath, `</v3/x?last=1>; rel="next"`, `</v3/x?last=1>; rel="next"`},
		{inPath, `</v2/library/alpine/tags/list?last=3`, `</v2/library/alpine/tags/list?last=3`},
	}
	for _, tt := range tests {
		if got := tt.q.sameRegistry(tt.link); got != tt.want {
			t.Errorf("sameRegistry(%s) = %s, want %s", tt.link, got, tt.want)
		}
	}
}

// accessLog keeps the fields of every access line, for tests to read.
type accessLog struct {
	lines chan map[string]string
}

func newAccessLog() *accessLog { return &accessLog{lines: make(chan map[string]string, 256)} }

func (l *accessLog) logger() *slog.Logger { return slog.New(accessHandler{l}) }

// last returns the next access line; the caller knows it was written
// (its handler returned).
func (l *accessLog) last(t *testing.T) map[string]string {
	t.Helper()
	select {
	case line := <-l.lines:
		return line
	default:
		t.Fatal("no access line written")
		return nil
	}
}

type accessHandler struct{ l *accessLog }

func (h accessHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h accessHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h accessHandler) WithGroup(string) slog.Handler            { return h }

func (h accessHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	line := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		line[a.Key] = a.Value.String()
		return true
	})
	h.l.lines <- line
	return nil
}
